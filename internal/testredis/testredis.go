// Package testredis starts private redis-server processes for tests, each on a free
// loopback port, so tests never touch a shared instance. The redis-server binary must be
// on PATH (the Makefile's test target checks and installs it).
package testredis

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/redisserver"
)

// Server is a redis-server process owned by one test.
type Server struct {
	tb testing.TB
	*redisserver.Server
}

// Start starts a redis-server with no persistence and returns a client to it. Both are
// closed when the test ends.
func Start(tb testing.TB) (*Server, *redis.Client) {
	tb.Helper()
	return StartWith(tb, "--save", "", "--appendonly", "no")
}

// StartWith starts a redis-server with extra configuration arguments (for example
// "--appendonly", "yes" to survive Restart).
func StartWith(tb testing.TB, args ...string) (*Server, *redis.Client) {
	tb.Helper()
	rs, err := redisserver.Start(tb.TempDir(), args...)
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{tb: tb, Server: rs}
	tb.Cleanup(s.Stop)
	return s, s.Client()
}

// Client returns a new client to the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, PoolSize: 256, MaxRetries: -1})
	s.tb.Cleanup(func() { c.Close() })
	return c
}

// Restart kills the server and starts it again on the same port and directory: with
// "--appendonly yes" it comes back with its data; without persistence, empty.
func (s *Server) Restart() {
	s.tb.Helper()
	if err := s.Server.Restart(); err != nil {
		s.tb.Fatal(err)
	}
}
