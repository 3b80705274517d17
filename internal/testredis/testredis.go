// Package testredis starts private redis-server processes for tests, each on a free
// loopback port, so tests never touch a shared instance. The redis-server binary must be
// on PATH (the Makefile's test target checks and installs it).
package testredis

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process owned by one test.
type Server struct {
	tb   testing.TB
	Addr string
	dir  string
	args []string
	cmd  *exec.Cmd
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
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server is not on PATH (run `make test`, which installs it): %v", err)
	}
	s := &Server{tb: tb, dir: tb.TempDir(), args: args}
	s.Addr = "127.0.0.1:" + strconv.Itoa(freePort(tb))
	s.start(bin)
	tb.Cleanup(s.Stop)
	c := s.Client()
	tb.Cleanup(func() { c.Close() })
	return s, c
}

// Client returns a new client to the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, PoolSize: 256})
	s.tb.Cleanup(func() { c.Close() })
	return c
}

func (s *Server) start(bin string) {
	s.tb.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	args := append([]string{"--port", port, "--bind", "127.0.0.1", "--dir", s.dir,
		"--logfile", filepath.Join(s.dir, "redis.log")}, s.args...)
	s.cmd = exec.Command(bin, args...)
	if err := s.cmd.Start(); err != nil {
		s.tb.Fatalf("start redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.tb.Fatalf("redis-server on %s did not answer: %v", s.Addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop kills the server. It is safe to call more than once.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart kills the server and starts it again on the same port and directory: with
// "--appendonly yes" it comes back with its data; without persistence, empty.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	bin, _ := exec.LookPath("redis-server")
	s.start(bin)
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
