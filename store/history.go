package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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
var ErrBehind = fmt.Errorf("ledger behind")

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
}

// ApplyEvents persists a batch of outbox events: orders, cancellations and every
// movement, then advances the touched SKUs' folds. Every write is an idempotent upsert,
// so applying a batch again (after a crash before the XACK) changes nothing.
func (s *Store) ApplyEvents(ctx context.Context, events []engine.Event) error {
	var orders, ledger []mongo.WriteModel
	known := map[string]map[int64]LedgerEntry{}
	for _, e := range events {
		switch e.Kind {
		case engine.EventOrder:
			var total int64
			for _, it := range e.Items {
				total += it.Quantity * it.UnitPrice
			}
			set := bson.M{"userId": e.UserID, "items": e.Items, "total": total, "currency": e.Currency, "createdAt": e.At}
			if e.HoldID != "" {
				set["holdId"] = e.HoldID
			}
			// A cancellation may be persisted first (another syncer took it): the order's
			// status is set only when this write creates the document.
			orders = append(orders, mongo.NewUpdateOneModel().SetFilter(bson.M{"_id": e.ID}).SetUpsert(true).
				SetUpdate(bson.M{"$set": set, "$setOnInsert": bson.M{"status": string(engine.OrderConfirmed)}}))
		case engine.EventCancel:
			orders = append(orders, mongo.NewUpdateOneModel().SetFilter(bson.M{"_id": e.ID}).SetUpsert(true).
				SetUpdate(bson.M{"$set": bson.M{"status": string(engine.OrderCancelled), "cancelledAt": e.At}}))
		}
		for _, m := range e.Movements {
			le := LedgerEntry{ID: m.ID(), SKU: m.SKU, Seq: m.Seq, Kind: m.Kind, Available: m.Available,
				Reserved: m.Reserved, Sold: m.Sold, Ref: m.Ref, Reason: m.Reason, Actor: e.Actor, At: m.At}
			ledger = append(ledger, mongo.NewUpdateOneModel().SetFilter(bson.M{"_id": le.ID}).SetUpsert(true).
				SetUpdate(bson.M{"$setOnInsert": le}))
			if known[m.SKU] == nil {
				known[m.SKU] = map[int64]LedgerEntry{}
			}
			known[m.SKU][m.Seq] = le
		}
	}
	if err := bulkUpsert(ctx, s.ledger, ledger); err != nil {
		return dbErr("write ledger", err)
	}
	if err := bulkUpsert(ctx, s.orders, orders); err != nil {
		return dbErr("write orders", err)
	}
	for sku, k := range known {
		if _, err := s.Advance(ctx, sku, k); err != nil {
			return err
		}
	}
	return nil
}

// bulkUpsert runs idempotent upserts. Two upserts of one new _id may race so that
// one fails with a duplicate key; running the bulk again then takes the update path,
// which is harmless for idempotent writes.
func bulkUpsert(ctx context.Context, c *mongo.Collection, models []mongo.WriteModel) error {
	if len(models) == 0 {
		return nil
	}
	var err error
	for range 3 {
		_, err = c.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
		if !onlyDuplicateKeys(err) {
			return err
		}
	}
	return err
}

func onlyDuplicateKeys(err error) bool {
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return false
	}
	for _, we := range bwe.WriteErrors {
		if we.Code != 11000 {
			return false
		}
	}
	return true
}

// Order reads a persisted order. Errors: engine.ErrNotFound.
func (s *Store) Order(ctx context.Context, id string) (engine.Order, error) {
	var d orderDoc
	if err := s.orders.FindOne(ctx, bson.M{"_id": id}).Decode(&d); err != nil {
		return engine.Order{}, dbErr("order "+id, err)
	}
	return engine.Order{ID: d.ID, UserID: d.UserID, Items: d.Items, Total: d.Total, Currency: d.Currency,
		Status: engine.OrderStatus(d.Status), CreatedAt: d.CreatedAt.UTC(), HoldID: d.HoldID}, nil
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
	var models []mongo.WriteModel
	now := time.Now().UTC()
	for seq := int64(1); seq <= last; seq++ {
		if !have[seq] {
			e := LedgerEntry{ID: sku + ":" + strconv.FormatInt(seq, 10), SKU: sku, Seq: seq, Kind: "lost",
				Reason: "movement lost with Redis data before it was persisted", At: now}
			models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.M{"_id": e.ID}).SetUpsert(true).
				SetUpdate(bson.M{"$setOnInsert": e}))
		}
	}
	if err := bulkUpsert(ctx, s.ledger, models); err != nil {
		return 0, 0, dbErr("fill ledger gaps "+sku, err)
	}
	return last, int64(len(models)), nil
}

// CountLedgerAfter counts a SKU's ledger entries beyond seq: after a rebuild, entries
// that a gap in the sequence leaves unaccounted for.
func (s *Store) CountLedgerAfter(ctx context.Context, sku string, seq int64) (int64, error) {
	n, err := s.ledger.CountDocuments(ctx, bson.M{"sku": sku, "seq": bson.M{"$gt": seq}})
	return n, dbErr("ledger "+sku, err)
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
	models := make([]mongo.WriteModel, len(levels))
	for i, lv := range levels {
		snap := Snapshot{ID: lv.SKU + ":" + strconv.FormatInt(lv.Version, 10), SKU: lv.SKU, Version: lv.Version,
			Available: lv.Available, Reserved: lv.Reserved, Sold: lv.Sold, At: at.UTC()}
		models[i] = mongo.NewUpdateOneModel().SetFilter(bson.M{"_id": snap.ID}).SetUpsert(true).
			SetUpdate(bson.M{"$setOnInsert": snap})
	}
	_, err := s.snaps.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
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
	_, err := s.reps.ReplaceOne(ctx, bson.M{"_id": at.UTC().Format(time.RFC3339Nano)},
		bson.M{"at": at.UTC(), "report": report}, options.Replace().SetUpsert(true))
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
