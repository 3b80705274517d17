// Package testmongo gives tests a MongoDB database: a fresh database per test on one
// embedded FerretDB (SQLite backend, temp dir, free port) started once per test package,
// or on the server MONGODB_TEST_URI names, so the same tests run on a real MongoDB.
//
// A package that uses it calls Main from its TestMain, so the server is stopped and its
// files removed when the package's tests are done.
package testmongo

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/flashstock/flashstock/internal/embedded"
)

var (
	once    sync.Once
	uri     string
	server  *embedded.Mongo
	dir     string
	initErr error
	seq     atomic.Int64
)

// Main runs the package's tests and then stops the embedded server, if one was started.
func Main(m *testing.M) int {
	code := m.Run()
	if server != nil {
		_ = server.Close()
	}
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	return code
}

// URI returns the address of the test server, starting the embedded one on first use.
func URI(tb testing.TB) string {
	tb.Helper()
	once.Do(func() {
		if uri = os.Getenv("MONGODB_TEST_URI"); uri != "" {
			return
		}
		if dir, initErr = os.MkdirTemp("", "flashstock-ferretdb-"); initErr != nil {
			return
		}
		server, initErr = embedded.StartMongo(context.Background(), dir, "127.0.0.1:0", nil)
		if initErr == nil {
			uri = server.URI
		}
	})
	if initErr != nil {
		tb.Fatalf("start embedded FerretDB: %v", initErr)
	}
	return uri
}

// Client returns a new client to the test server, disconnected when the test ends.
func Client(tb testing.TB) *mongo.Client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := mongo.Connect(ctx, options.Client().ApplyURI(URI(tb)))
	if err != nil {
		tb.Fatalf("connect to %s: %v", URI(tb), err)
	}
	if err := c.Ping(ctx, nil); err != nil {
		tb.Fatalf("ping %s: %v", URI(tb), err)
	}
	tb.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

// Database returns a fresh database for this test, dropped when the test ends.
func Database(tb testing.TB) *mongo.Database {
	tb.Helper()
	name := strings.NewReplacer("/", "_", " ", "_", ".", "_").Replace(tb.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t%d_%s", seq.Add(1), name)
	db := Client(tb).Database(name)
	tb.Cleanup(func() { _ = db.Drop(context.Background()) })
	return db
}
