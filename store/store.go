// Package store is flashstock's durable history in MongoDB: the catalog, users, orders,
// the append-only movement ledger with a per-SKU fold of it, stock snapshots and
// reconciliation reports.
//
// Every write is an idempotent single-document upsert keyed by a deterministic _id, so
// replaying the outbox is harmless and no transaction is needed (FerretDB, which the
// embedded mode and the tests run, has none). Driver errors leave this package as the
// engine's errors: ErrNotFound, ErrAlreadyExists, ErrUnavailable.
package store

import (
	"context"
	"errors"
	"fmt"
	"net"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/x/mongo/driver/topology"

	"github.com/flashstock/flashstock/engine"
)

// Collection names.
const (
	colProducts  = "products"
	colUsers     = "users"
	colOrders    = "orders"
	colLedger    = "ledger"
	colFolds     = "folds"
	colSnapshots = "snapshots"
	colReports   = "reconcile_reports"
	colConflicts = "conflicts"
)

// Store is the MongoDB persistence. It is safe for concurrent use.
type Store struct {
	db                                                  *mongo.Database
	products, users, orders, ledger, folds, snaps, reps *mongo.Collection
	conflicts                                           *mongo.Collection
}

// New returns a Store on db. Call EnsureIndexes once at start-up.
func New(db *mongo.Database) *Store {
	return &Store{
		db: db, products: db.Collection(colProducts), users: db.Collection(colUsers),
		orders: db.Collection(colOrders), ledger: db.Collection(colLedger), folds: db.Collection(colFolds),
		snaps: db.Collection(colSnapshots), reps: db.Collection(colReports), conflicts: db.Collection(colConflicts),
	}
}

// Database is the database the store writes to.
func (s *Store) Database() *mongo.Database { return s.db }

// EnsureIndexes creates the secondary indexes the queries use. It is idempotent.
// (Users are unique by email through their _id, which every MongoDB-compatible server
// enforces.)
func (s *Store) EnsureIndexes(ctx context.Context) error {
	idx := []struct {
		c    *mongo.Collection
		keys bson.D
	}{
		{s.orders, bson.D{{Key: "userId", Value: 1}, {Key: "_id", Value: -1}}},
		{s.orders, bson.D{{Key: "createdAt", Value: 1}}},
		{s.ledger, bson.D{{Key: "sku", Value: 1}, {Key: "seq", Value: 1}}},
		{s.snaps, bson.D{{Key: "sku", Value: 1}, {Key: "at", Value: -1}}},
	}
	for _, i := range idx {
		if _, err := i.c.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: i.keys}); err != nil {
			return dbErr("ensure indexes", err)
		}
	}
	return nil
}

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	return dbErr("ping", s.db.Client().Ping(ctx, nil))
}

// MongoErr translates mongo-driver errors into the engine's vocabulary at the edge:
// ErrNotFound, ErrAlreadyExists, ErrUnavailable (the server could not be reached);
// others are wrapped as they are. Packages that keep collections of their own use it too.
func MongoErr(op string, err error) error { return dbErr(op, err) }

func dbErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, mongo.ErrNoDocuments):
		return fmt.Errorf("%s: %w", op, engine.ErrNotFound)
	case mongo.IsDuplicateKeyError(err):
		return fmt.Errorf("%s: %w", op, engine.ErrAlreadyExists)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", op, err)
	}
	var ne net.Error
	if mongo.IsNetworkError(err) || mongo.IsTimeout(err) || errors.As(err, &ne) ||
		errors.Is(err, mongo.ErrClientDisconnected) || errors.As(err, new(topology.ServerSelectionError)) {
		return fmt.Errorf("%s: %w: %w", op, engine.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
