// Package embedded runs flashstock's dependencies in-process for the embedded mode and
// for tests: a MongoDB-compatible server (FerretDB on SQLite).
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Mongo is an embedded FerretDB server speaking the MongoDB wire protocol, storing its
// data in SQLite files under a directory.
type Mongo struct {
	URI    string
	cancel context.CancelFunc
	done   chan error
}

// StartMongo starts FerretDB with its SQLite files under dir, listening on addr (use
// "127.0.0.1:0" for a free port). Stop it with Close.
func StartMongo(ctx context.Context, dir, addr string, logger *slog.Logger) (*Mongo, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded mongo: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("embedded mongo: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
		Logger:    logger,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded mongo: %w", err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m := &Mongo{cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- f.Run(ctx) }()
	m.URI = f.MongoDBURI()
	return m, nil
}

// Close stops the server and waits (up to 10 s) for it to let go of its files.
func (m *Mongo) Close() error {
	m.cancel()
	select {
	case err := <-m.done:
		return err
	case <-time.After(10 * time.Second):
		return errors.New("embedded mongo: did not stop within 10s")
	}
}
