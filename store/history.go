package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/flashstock/flashstock/engine"
)

// LedgerEntry is one movement, stored under its deterministic id "sku:seq".
type LedgerEntry struct {
	ID        string    `bson:"_id"`
	SKU       string    `bson:"sku"`
	Seq       int64     `bson:"seq"`
	Kind      string    `bson:"kind"`
	Available int64     `bson:"da"`
	Reserved  int64     `bson:"dr"`
	Sold      int64     `bson:"ds"`
	Ref       string    `bson:"ref,omitempty"`
	Reason    string    `bson:"reason,omitempty"`
	Actor     string    `bson:"actor,omitempty"`
	At        time.Time `bson:"at"`
}

// Fold is a SKU's levels as its ledger implies them up to movement Seq.
type Fold struct {
	SKU       string `bson:"_id"`
	Seq       int64  `bson:"seq"`
	Available int64  `bson:"a"`
	Reserved  int64  `bson:"r"`
	Sold      int64  `bson:"s"`
}

func (f *Fold) add(e LedgerEntry, sign int64) {
	f.Available += sign * e.Available
	f.Reserved += sign * e.Reserved
	f.Sold += sign * e.Sold
}

// ErrBehind says the ledger has not yet caught up with a sequence number.
var ErrBehind = errors.New("ledger behind")

type orderDoc struct {
	ID          string        `bson:"_id"`
	UserID      string        `bson:"userId"`
	Items       []engine.Item `bson:"items"`
	Total       int64         `bson:"total"`
	Currency    string        `bson:"currency"`
	Status      string        `bson:"status"`
	CreatedAt   time.Time     `bson:"createdAt"`
	HoldID      string        `bson:"holdId,omitempty"`
	CancelledAt *time.Time    `bson:"cancelledAt,omitempty"`
	// Lines are the order's lines as Redis recorded them, ":L" marking units counted
	// against a per-user limit: what restoring the order into Redis needs.
	Lines string `bson:"lines,omitempty"`
}

// ApplyEvents persists a batch of outbox events: see ApplyBatch.
func (s *Store) ApplyEvents(ctx context.Context, events []engine.Event) error {
	_, err := s.ApplyBatch(ctx, events, nil)
	return err
}

// ApplyBatch persists a batch of outbox events: orders, cancellations and every
// movement, then advances the touched SKUs' folds. lines maps order ids to their lines
// as recorded (engine.RecordedLines), kept with the order. Applying a batch again (after
// a crash before the XACK) changes nothing.
//
// Writes are inserts wherever possible, and a duplicate key means "already there": on
// FerretDB an upsert of a new _id scans the collection, while an insert, or an update
// of an existing _id, is an index lookup. A ledger entry whose id is taken by an entry
// with other content is not dropped: it is kept as a Conflict (returned when recorded
// for the first time) and left out of the fold.
func (s *Store) ApplyBatch(ctx context.Context, events []engine.Event, lines map[string]string) ([]Conflict, error) {
	var ledger []any
	var orders []orderDoc
	var cancels []engine.Event
	known := map[string]map[int64]LedgerEntry{}
	for _, e := range events {
		switch e.Kind {
		case engine.EventOrder:
			d := orderDoc{ID: e.ID, UserID: e.UserID, Items: e.Items, Currency: e.Currency,
				Status: string(engine.OrderConfirmed), CreatedAt: e.At, HoldID: e.HoldID, Lines: lines[e.ID]}
			for _, it := range e.Items {
				d.Total += it.Quantity * it.UnitPrice
			}
			orders = append(orders, d)
		case engine.EventCancel:
			cancels = append(cancels, e)
		}
		for _, m := range e.Movements {
			le := LedgerEntry{ID: m.ID(), SKU: m.SKU, Seq: m.Seq, Kind: m.Kind, Available: m.Available,
				Reserved: m.Reserved, Sold: m.Sold, Ref: m.Ref, Reason: m.Reason, Actor: e.Actor, At: m.At}
			ledger = append(ledger, le)
			if known[m.SKU] == nil {
				known[m.SKU] = map[int64]LedgerEntry{}
			}
			known[m.SKU][m.Seq] = le
		}
	}
	dups, err := insertNew(ctx, s.ledger, ledger)
	if err != nil {
		return nil, dbErr("write ledger", err)
	}
	dupEntries := make([]LedgerEntry, len(dups))
	for i, d := range dups {
		dupEntries[i] = ledger[d].(LedgerEntry)
		// The fold reads what the ledger holds, not what this batch brought.
		delete(known[dupEntries[i].SKU], dupEntries[i].Seq)
	}
	conflicts, err := s.sortConflicts(ctx, dupEntries)
	if err != nil {
		return conflicts, err
	}
	if err := s.putOrders(ctx, orders); err != nil {
		return conflicts, dbErr("write orders", err)
	}
	for _, e := range cancels {
		if err := s.cancelOrder(ctx, e); err != nil {
			return conflicts, dbErr("write orders", err)
		}
	}
	for sku, k := range known {
		if _, err := s.Advance(ctx, sku, k); err != nil {
			return conflicts, err
		}
	}
	return conflicts, nil
}

// insertNew inserts docs, unordered, and returns the indexes of those whose _id existed
// already; any other failure is an error.
func insertNew(ctx context.Context, c *mongo.Collection, docs []any) ([]int, error) {
	if len(docs) == 0 {
		return nil, nil
	}
	_, err := c.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	if err == nil {
		return nil, nil
	}
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil {
		return nil, err
	}
	dups := make([]int, 0, len(bwe.WriteErrors))
	for _, we := range bwe.WriteErrors {
		if we.Code != 11000 {
			return nil, err
		}
		dups = append(dups, we.Index)
	}
	return dups, nil
}

// putOrders stores confirmed orders. An order already there (a redelivery, or a
// cancellation that arrived first and left a stub) gets its fields set, keeping its
// status.
func (s *Store) putOrders(ctx context.Context, orders []orderDoc) error {
	docs := make([]any, len(orders))
	for i, d := range orders {
		docs[i] = d
	}
	dups, err := insertNew(ctx, s.orders, docs)
	if err != nil {
		return err
	}
	for _, i := range dups {
		d := orders[i]
		set := bson.M{"userId": d.UserID, "items": d.Items, "total": d.Total, "currency": d.Currency, "createdAt": d.CreatedAt}
		if d.HoldID != "" {
			set["holdId"] = d.HoldID
		}
		if d.Lines != "" {
			set["lines"] = d.Lines
		}
		if _, err := s.orders.UpdateOne(ctx, bson.M{"_id": d.ID}, bson.M{"$set": set}); err != nil {
			return err
		}
	}
	return nil
}

// cancelOrder marks an order cancelled; if the order has not arrived yet (another
// syncer has it), a stub with the status waits for it.
func (s *Store) cancelOrder(ctx context.Context, e engine.Event) error {
	set := bson.M{"$set": bson.M{"status": string(engine.OrderCancelled), "cancelledAt": e.At}}
	for range 3 {
		res, err := s.orders.UpdateOne(ctx, bson.M{"_id": e.ID}, set)
		if err != nil || res.MatchedCount == 1 {
			return err
		}
		_, err = s.orders.InsertOne(ctx, orderDoc{ID: e.ID, UserID: e.UserID, Status: string(engine.OrderCancelled), CancelledAt: &e.At})
		if !mongo.IsDuplicateKeyError(err) {
			return err
		}
		// The order arrived meanwhile: update it.
	}
	return fmt.Errorf("cancel %s: lost three races", e.ID)
}

// Order reads a persisted order. Errors: engine.ErrNotFound.
func (s *Store) Order(ctx context.Context, id string) (engine.Order, error) {
	var d orderDoc
	if err := s.orders.FindOne(ctx, bson.M{"_id": id}).Decode(&d); err != nil {
		return engine.Order{}, dbErr("order "+id, err)
	}
	return d.order(), nil
}

func (d orderDoc) order() engine.Order {
	return engine.Order{ID: d.ID, UserID: d.UserID, Items: d.Items, Total: d.Total, Currency: d.Currency,
		Status: engine.OrderStatus(d.Status), CreatedAt: d.CreatedAt.UTC(), HoldID: d.HoldID}
}

// CountOrders counts persisted orders (all, or of one status).
func (s *Store) CountOrders(ctx context.Context, status engine.OrderStatus) (int64, error) {
	filter := bson.M{}
	if status != "" {
		filter["status"] = string(status)
	}
	n, err := s.orders.CountDocuments(ctx, filter)
	return n, dbErr("count orders", err)
}

// Fold returns a SKU's stored fold (a zero fold if it has none yet).
func (s *Store) Fold(ctx context.Context, sku string) (Fold, error) {
	f := Fold{SKU: sku}
	err := s.folds.FindOne(ctx, bson.M{"_id": sku}).Decode(&f)
	if err == mongo.ErrNoDocuments {
		return Fold{SKU: sku}, nil
	}
	return f, dbErr("fold "+sku, err)
}

// Advance moves a SKU's fold forward over every contiguous ledger entry after it:
// entries from known first, then from the ledger by _id. The stored fold changes only
// by compare-and-set on its sequence number, so concurrent syncers never apply a
// movement twice.
func (s *Store) Advance(ctx context.Context, sku string, known map[int64]LedgerEntry) (Fold, error) {
	for {
		cur, err := s.Fold(ctx, sku)
		if err != nil {
			return Fold{}, err
		}
		next := cur
		for {
			e, ok := known[next.Seq+1]
			if !ok {
				if e, ok, err = s.entry(ctx, sku, next.Seq+1); err != nil {
					return Fold{}, err
				}
			}
			if !ok {
				break
			}
			next.add(e, 1)
			next.Seq = e.Seq
		}
		if next.Seq == cur.Seq {
			return cur, nil
		}
		swapped, err := s.swapFold(ctx, cur, next)
		if err != nil {
			return Fold{}, err
		}
		if swapped {
			return next, nil
		}
		// Another syncer advanced it first; start again from its fold.
	}
}

func (s *Store) swapFold(ctx context.Context, cur, next Fold) (bool, error) {
	if cur.Seq == 0 {
		_, err := s.folds.InsertOne(ctx, next)
		if mongo.IsDuplicateKeyError(err) {
			return false, nil
		}
		return err == nil, dbErr("fold "+next.SKU, err)
	}
	res, err := s.folds.UpdateOne(ctx, bson.M{"_id": cur.SKU, "seq": cur.Seq},
		bson.M{"$set": bson.M{"seq": next.Seq, "a": next.Available, "r": next.Reserved, "s": next.Sold}})
	if err != nil {
		return false, dbErr("fold "+next.SKU, err)
	}
	return res.MatchedCount == 1, nil
}

func (s *Store) entry(ctx context.Context, sku string, seq int64) (LedgerEntry, bool, error) {
	var e LedgerEntry
	err := s.ledger.FindOne(ctx, bson.M{"_id": sku + ":" + strconv.FormatInt(seq, 10)}).Decode(&e)
	if err == mongo.ErrNoDocuments {
		return e, false, nil
	}
	if err != nil {
		return e, false, dbErr("ledger "+sku, err)
	}
	return e, true, nil
}

// FoldAt returns a SKU's levels as the ledger implies them at exactly movement seq.
// Errors: ErrBehind if the ledger does not reach seq yet.
func (s *Store) FoldAt(ctx context.Context, sku string, seq int64) (Fold, error) {
	f, err := s.Advance(ctx, sku, nil)
	if err != nil {
		return Fold{}, err
	}
	if f.Seq < seq {
		return f, fmt.Errorf("fold %s at %d: ledger reaches %d: %w", sku, seq, f.Seq, ErrBehind)
	}
	for f.Seq > seq {
		e, ok, err := s.entry(ctx, sku, f.Seq)
		if err != nil {
			return Fold{}, err
		}
		if !ok {
			return Fold{}, fmt.Errorf("fold %s: ledger entry %d missing below the fold", sku, f.Seq)
		}
		f.add(e, -1)
		f.Seq--
	}
	return f, nil
}

// Ledger returns a SKU's ledger entries in sequence order.
func (s *Store) Ledger(ctx context.Context, sku string) ([]LedgerEntry, error) {
	cur, err := s.ledger.Find(ctx, bson.M{"sku": sku}, options.Find().SetSort(bson.D{{Key: "seq", Value: 1}}))
	if err != nil {
		return nil, dbErr("ledger "+sku, err)
	}
	var out []LedgerEntry
	return out, dbErr("ledger "+sku, cur.All(ctx, &out))
}

// FillGaps makes a SKU's ledger contiguous again after Redis lost movements that never
// reached MongoDB: each missing sequence number below the highest one gets an entry of
// kind "lost" with no effect, so the fold can advance over the movements that did
// arrive. It returns the highest sequence number and how many entries it filled.
func (s *Store) FillGaps(ctx context.Context, sku string) (last int64, filled int64, err error) {
	cur, err := s.ledger.Find(ctx, bson.M{"sku": sku}, options.Find().SetProjection(bson.M{"seq": 1}))
	if err != nil {
		return 0, 0, dbErr("ledger "+sku, err)
	}
	var rows []struct {
		Seq int64 `bson:"seq"`
	}
	if err := cur.All(ctx, &rows); err != nil {
		return 0, 0, dbErr("ledger "+sku, err)
	}
	have := make(map[int64]bool, len(rows))
	for _, r := range rows {
		have[r.Seq] = true
		last = max(last, r.Seq)
	}
	var fill []any
	now := time.Now().UTC()
	for seq := int64(1); seq <= last; seq++ {
		if !have[seq] {
			fill = append(fill, LedgerEntry{ID: sku + ":" + strconv.FormatInt(seq, 10), SKU: sku, Seq: seq, Kind: "lost",
				Reason: "movement lost with Redis data before it was persisted", At: now})
		}
	}
	if _, err := insertNew(ctx, s.ledger, fill); err != nil {
		return 0, 0, dbErr("fill ledger gaps "+sku, err)
	}
	return last, int64(len(fill)), nil
}

// Snapshot is a SKU's live levels at a moment, for history and audits.
type Snapshot struct {
	ID        string    `bson:"_id"` // sku:version
	SKU       string    `bson:"sku"`
	Version   int64     `bson:"version"`
	Available int64     `bson:"available"`
	Reserved  int64     `bson:"reserved"`
	Sold      int64     `bson:"sold"`
	At        time.Time `bson:"at"`
}

// SaveSnapshots stores live levels; a level already snapshotted at its version is not
// stored twice.
func (s *Store) SaveSnapshots(ctx context.Context, levels []engine.Level, at time.Time) error {
	if len(levels) == 0 {
		return nil
	}
	docs := make([]any, len(levels))
	for i, lv := range levels {
		docs[i] = Snapshot{ID: lv.SKU + ":" + strconv.FormatInt(lv.Version, 10), SKU: lv.SKU, Version: lv.Version,
			Available: lv.Available, Reserved: lv.Reserved, Sold: lv.Sold, At: at.UTC()}
	}
	_, err := insertNew(ctx, s.snaps, docs)
	return dbErr("save snapshots", err)
}

// Snapshots returns a SKU's snapshots, newest first.
func (s *Store) Snapshots(ctx context.Context, sku string) ([]Snapshot, error) {
	cur, err := s.snaps.Find(ctx, bson.M{"sku": sku}, options.Find().SetSort(bson.D{{Key: "at", Value: -1}}))
	if err != nil {
		return nil, dbErr("snapshots", err)
	}
	var out []Snapshot
	return out, dbErr("snapshots", cur.All(ctx, &out))
}

// SaveReport stores a reconciliation report under its time.
func (s *Store) SaveReport(ctx context.Context, at time.Time, report any) error {
	_, err := insertNew(ctx, s.reps, []any{bson.M{"_id": at.UTC().Format(time.RFC3339Nano), "at": at.UTC(), "report": report}})
	return dbErr("save report", err)
}

// LastReport decodes the newest report into into. Errors: engine.ErrNotFound.
func (s *Store) LastReport(ctx context.Context, into any) error {
	var doc struct {
		Report bson.Raw `bson:"report"`
	}
	err := s.reps.FindOne(ctx, bson.M{}, options.FindOne().SetSort(bson.D{{Key: "at", Value: -1}})).Decode(&doc)
	if err != nil {
		return dbErr("last report", err)
	}
	return dbErr("last report", bson.Unmarshal(doc.Report, into))
}

// Orders lists persisted orders, newest first, of one user ("" = everyone's), after an
// opaque cursor from a previous page. It returns the next page's cursor ("" at the end).
// Errors: engine.ErrInvalid for a cursor it did not issue.
func (s *Store) Orders(ctx context.Context, userID, cursor string, limit int) ([]engine.Order, string, error) {
	filter := bson.M{}
	if userID != "" {
		filter["userId"] = userID
	}
	if cursor != "" {
		ms, id, ok := strings.Cut(cursor, "_")
		t, err := strconv.ParseInt(ms, 10, 64)
		if !ok || err != nil || id == "" {
			return nil, "", fmt.Errorf("orders: %w", &engine.ValidationError{Field: "cursor", Reason: "not a cursor this API issued"})
		}
		at := time.UnixMilli(t).UTC()
		filter["$or"] = bson.A{bson.M{"createdAt": bson.M{"$lt": at}}, bson.M{"createdAt": at, "_id": bson.M{"$lt": id}}}
	}
	cur, err := s.orders.Find(ctx, filter, options.Find().
		SetSort(bson.D{{Key: "createdAt", Value: -1}, {Key: "_id", Value: -1}}).SetLimit(int64(limit)+1))
	if err != nil {
		return nil, "", dbErr("orders", err)
	}
	var docs []orderDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, "", dbErr("orders", err)
	}
	next := ""
	if len(docs) > limit {
		docs = docs[:limit]
		last := docs[limit-1]
		next = strconv.FormatInt(last.CreatedAt.UnixMilli(), 10) + "_" + last.ID
	}
	out := make([]engine.Order, len(docs))
	for i, d := range docs {
		out[i] = d.order()
	}
	return out, next, nil
}
