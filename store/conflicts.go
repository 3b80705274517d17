package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/flashstock/flashstock/engine"
)

// Conflict is a movement that arrived under an id ("sku:seq") the ledger already holds
// with other content. Movement ids are handed out by Redis, so this happens only when
// Redis gave a sequence number out twice: it lost writes MongoDB had already received (a
// crash with appendfsync everysec, a failover to a lagging replica). The movement
// happened (a buyer may have been told so), so it is kept here, never dropped, until
// reconciliation records it again under a fresh sequence number and marks it resolved.
type Conflict struct {
	ID       string      `bson:"_id"` // movement id + ":" + Hash
	SKU      string      `bson:"sku"`
	Seq      int64       `bson:"seq"`
	Hash     string      `bson:"hash"`   // the conflicting movement's content hash
	Stored   string      `bson:"stored"` // the content hash of the entry the ledger kept
	Movement LedgerEntry `bson:"movement"`
	At       time.Time   `bson:"at"`
	Resolved bool        `bson:"resolved"`
	// RebasedAt is the sequence number of the movement that recorded it again.
	RebasedAt int64 `bson:"rebasedAt,omitempty"`
	// Pending names the restore about to record it again (MarkConflicts), so that a
	// restore whose outcome was not seen is neither lost nor applied twice.
	Pending string `bson:"pending,omitempty"`
}

// contentHash identifies a ledger entry's content: two entries with one id and one hash
// are the same movement delivered twice.
func contentHash(e LedgerEntry) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%d\n%s\n%d\n%d\n%d\n%s\n%s\n%s\n%d", e.SKU, e.Seq, e.Kind, e.Available, e.Reserved, e.Sold,
		e.Ref, e.Reason, e.Actor, e.At.UnixMilli())
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// sortConflicts inserts entries whose ids the ledger held already: an identical entry is
// a redelivery; a different one is kept in the conflicts collection. It returns the
// conflicts it recorded for the first time.
func (s *Store) sortConflicts(ctx context.Context, dups []LedgerEntry) ([]Conflict, error) {
	if len(dups) == 0 {
		return nil, nil
	}
	ids := make([]string, len(dups))
	for i, d := range dups {
		ids[i] = d.ID
	}
	cur, err := s.ledger.Find(ctx, bson.M{"_id": bson.M{"$in": ids}})
	if err != nil {
		return nil, dbErr("read ledger", err)
	}
	var stored []LedgerEntry
	if err := cur.All(ctx, &stored); err != nil {
		return nil, dbErr("read ledger", err)
	}
	have := make(map[string]string, len(stored))
	for _, e := range stored {
		have[e.ID] = contentHash(e)
	}
	var out []Conflict
	now := time.Now().UTC()
	for _, d := range dups {
		h := contentHash(d)
		if have[d.ID] == h {
			continue // already stored
		}
		c := Conflict{ID: d.ID + ":" + h, SKU: d.SKU, Seq: d.Seq, Hash: h, Stored: have[d.ID], Movement: d, At: now}
		_, err := s.conflicts.InsertOne(ctx, c)
		if mongo.IsDuplicateKeyError(err) {
			continue // recorded on an earlier delivery
		}
		if err != nil {
			return out, dbErr("record conflict "+d.ID, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// OpenConflicts returns every conflict not yet resolved, by SKU, in sequence order.
func (s *Store) OpenConflicts(ctx context.Context) (map[string][]Conflict, error) {
	cur, err := s.conflicts.Find(ctx, bson.M{"resolved": false}, options.Find().SetSort(bson.D{{Key: "seq", Value: 1}}))
	if err != nil {
		return nil, dbErr("conflicts", err)
	}
	var all []Conflict
	if err := cur.All(ctx, &all); err != nil {
		return nil, dbErr("conflicts", err)
	}
	out := map[string][]Conflict{}
	for _, c := range all {
		out[c.SKU] = append(out[c.SKU], c)
	}
	return out, nil
}

// ResolveConflicts marks conflicts as recorded again by the movement at seq.
func (s *Store) ResolveConflicts(ctx context.Context, cs []Conflict, seq int64) error {
	for _, c := range cs {
		_, err := s.conflicts.UpdateOne(ctx, bson.M{"_id": c.ID}, bson.M{"$set": bson.M{"resolved": true, "rebasedAt": seq}})
		if err != nil {
			return dbErr("resolve conflict "+c.ID, err)
		}
	}
	return nil
}

// MarkConflicts names the restore (token) about to record conflicts again.
func (s *Store) MarkConflicts(ctx context.Context, cs []Conflict, token string) error {
	for _, c := range cs {
		if _, err := s.conflicts.UpdateOne(ctx, bson.M{"_id": c.ID}, bson.M{"$set": bson.M{"pending": token}}); err != nil {
			return dbErr("mark conflict "+c.ID, err)
		}
	}
	return nil
}

// RebaseMovement finds a SKU's ledger entry of kind rebase whose reason carries token,
// and returns its sequence number.
func (s *Store) RebaseMovement(ctx context.Context, sku, token string) (int64, bool, error) {
	cur, err := s.ledger.Find(ctx, bson.M{"sku": sku, "kind": engine.EventRebase})
	if err != nil {
		return 0, false, dbErr("ledger "+sku, err)
	}
	var es []LedgerEntry
	if err := cur.All(ctx, &es); err != nil {
		return 0, false, dbErr("ledger "+sku, err)
	}
	for _, e := range es {
		if strings.Contains(e.Reason, token) {
			return e.Seq, true, nil
		}
	}
	return 0, false, nil
}

// Conflicts returns a SKU's conflicts, resolved or not, in sequence order.
func (s *Store) Conflicts(ctx context.Context, sku string) ([]Conflict, error) {
	cur, err := s.conflicts.Find(ctx, bson.M{"sku": sku}, options.Find().SetSort(bson.D{{Key: "seq", Value: 1}}))
	if err != nil {
		return nil, dbErr("conflicts", err)
	}
	var out []Conflict
	return out, dbErr("conflicts", cur.All(ctx, &out))
}

// Folds returns every SKU's stored fold in one read.
func (s *Store) Folds(ctx context.Context) (map[string]Fold, error) {
	cur, err := s.folds.Find(ctx, bson.M{})
	if err != nil {
		return nil, dbErr("folds", err)
	}
	var all []Fold
	if err := cur.All(ctx, &all); err != nil {
		return nil, dbErr("folds", err)
	}
	out := make(map[string]Fold, len(all))
	for _, f := range all {
		out[f.SKU] = f
	}
	return out, nil
}

// LedgerAfter returns a SKU's ledger entries with after < seq ≤ upTo, in sequence order.
func (s *Store) LedgerAfter(ctx context.Context, sku string, after, upTo int64) ([]LedgerEntry, error) {
	cur, err := s.ledger.Find(ctx, bson.M{"sku": sku, "seq": bson.M{"$gt": after, "$lte": upTo}},
		options.Find().SetSort(bson.D{{Key: "seq", Value: 1}}))
	if err != nil {
		return nil, dbErr("ledger "+sku, err)
	}
	var out []LedgerEntry
	return out, dbErr("ledger "+sku, cur.All(ctx, &out))
}

// OrderRecord reads a persisted order with its lines as the checkout recorded them
// ("sku:qty:price", ":L" marking units counted against a per-user limit), ready to be
// written back into Redis. An order persisted before lines were kept gets lines built
// from its items, none marked: such units are never given back to a user's limit.
// Errors: engine.ErrNotFound.
func (s *Store) OrderRecord(ctx context.Context, id string) (engine.Order, string, error) {
	var d orderDoc
	if err := s.orders.FindOne(ctx, bson.M{"_id": id}).Decode(&d); err != nil {
		return engine.Order{}, "", dbErr("order "+id, err)
	}
	if d.UserID == "" || len(d.Items) == 0 {
		// A cancellation stub whose order has not arrived: nothing to restore yet.
		return engine.Order{}, "", fmt.Errorf("order %s: only its cancellation has arrived: %w", id, engine.ErrNotFound)
	}
	return d.order(), d.recordedLines(), nil
}

// recordedLines are the order's lines as Redis recorded them; for an order stored
// before they were kept, rebuilt from its items (without the ":L" marks).
func (d orderDoc) recordedLines() string {
	if d.Lines != "" {
		return d.Lines
	}
	var b strings.Builder
	for i, it := range d.Items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(it.SKU + ":" + strconv.FormatInt(it.Quantity, 10) + ":" + strconv.FormatInt(it.UnitPrice, 10))
	}
	return b.String()
}

// RecentOrders calls fn with every order created at or after since, with its lines as
// recorded, in no particular order; it stops at fn's first error.
func (s *Store) RecentOrders(ctx context.Context, since time.Time, fn func(engine.Order, string) error) error {
	cur, err := s.orders.Find(ctx, bson.M{"createdAt": bson.M{"$gte": since}})
	if err != nil {
		return dbErr("recent orders", err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		var d orderDoc
		if err := cur.Decode(&d); err != nil {
			return dbErr("recent orders", err)
		}
		if d.UserID == "" || len(d.Items) == 0 {
			continue // a cancellation stub
		}
		if err := fn(d.order(), d.recordedLines()); err != nil {
			return err
		}
	}
	return dbErr("recent orders", cur.Err())
}
