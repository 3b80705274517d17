package webhook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Delivery states.
const (
	StatusPending   = "pending"
	StatusDelivered = "delivered"
	StatusFailed    = "failed"
)

// Delivery is one event on its way to one subscription.
type Delivery struct {
	EventID       string     `json:"eventId"`
	Endpoint      string     `json:"endpoint"` // the subscription id
	Type          string     `json:"type"`
	Status        string     `json:"status"`
	Attempts      int        `json:"attempts"`
	LastStatus    int        `json:"lastStatus"` // the last HTTP status, 0 if none came
	LastError     string     `json:"lastError"`
	NextAttemptAt *time.Time `json:"nextAttemptAt"` // while pending
	DeliveredAt   *time.Time `json:"deliveredAt"`
	CreatedAt     time.Time  `json:"createdAt"`
}

// The store keeps deliveries in batches, because a MongoDB-compatible server pays per
// document written (FerretDB a few milliseconds each, whatever its size) and a flash
// sale makes thousands of events a second:
//
//   - webhook_batches (batchDoc): the work. The events one Enqueue call gives one
//     subscription form one batch document, which carries each pending delivery's
//     body and retry state and loses it when the delivery ends. Workers scan only
//     this collection, so a poll costs the backlog, not the history.
//   - webhook_claims (claimDoc): leases, one per batch being worked on.
//   - webhook_deliveries (recDoc): one record per delivery, inserted at enqueue and
//     never changed; its _id ("eventId.endpoint") makes Enqueue idempotent.
//   - webhook_outcomes (outDoc): how each ended delivery ended, inserted once.
//
// A worker claims a batch (insert a lease, check the batch's version, mark it), sends
// one wave of its due deliveries, and records the wave: outcomes in one insert, the
// batch in one update, the lease in one delete. That is about six writes a wave
// instead of several a delivery. Exclusivity comes from inserts into unique _ids,
// never from a conditional update alone (FerretDB makes those a read, a check and a
// write).

// batchDoc is a batch of pending deliveries to one subscription. Version counts the
// waves recorded: a lease is on one version, so a stale read of the batch cannot lead
// to a second attempt. Due is the earliest item's; LeaseUntil, while a worker holds a
// wave, until when (a hint that keeps due scans off it; the lease itself is the
// claimDoc), and the epoch otherwise. Fresh and Retrying count the items not attempted
// yet and those waiting for a retry.
type batchDoc struct {
	ID         string    `bson:"_id"`
	Endpoint   string    `bson:"endpoint"`
	Version    int       `bson:"version"`
	Due        time.Time `bson:"due"`
	LeaseUntil time.Time `bson:"leaseUntil"`
	Fresh      int       `bson:"fresh"`
	Retrying   int       `bson:"retrying"`
	Items      []item    `bson:"items"`
}

// item is one pending delivery in a batch.
type item struct {
	ID         string    `bson:"id"` // the record's _id
	EventID    string    `bson:"eventId"`
	Type       string    `bson:"type"`
	Body       string    `bson:"body"` // the request body, fixed at enqueue
	Attempts   int       `bson:"attempts"`
	Due        time.Time `bson:"due"`
	LastStatus int       `bson:"lastStatus"`
	LastError  string    `bson:"lastError"`
}

// recDoc is a delivery's record, under _id "eventId.endpoint"; Batch is the batch it
// was queued in.
type recDoc struct {
	ID        string    `bson:"_id"`
	EventID   string    `bson:"eventId"`
	Endpoint  string    `bson:"endpoint"`
	Type      string    `bson:"type"`
	Batch     string    `bson:"batch"`
	CreatedAt time.Time `bson:"createdAt"`
}

// outDoc is how a delivery ended, under the record's _id.
type outDoc struct {
	ID          string     `bson:"_id"`
	Status      string     `bson:"status"` // StatusDelivered or StatusFailed
	Attempts    int        `bson:"attempts"`
	LastStatus  int        `bson:"lastStatus"`
	LastError   string     `bson:"lastError"`
	DeliveredAt *time.Time `bson:"deliveredAt"`
	EndedAt     time.Time  `bson:"endedAt"`
}

// claimDoc is one worker's lease on one wave of one batch, under _id
// "batchId#version#generation".
type claimDoc struct {
	ID    string    `bson:"_id"`
	Batch string    `bson:"batch"`
	Owner string    `bson:"owner"`
	Until time.Time `bson:"until"`
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// noLease is leaseUntil of a batch no worker holds.
var noLease = time.Unix(0, 0).UTC()

// maxBatch bounds the deliveries in one batch document.
const maxBatch = 32

// Enqueue records a pending delivery of each event to each subscription that wants its
// type, due now. It is idempotent: an (event, subscription) pair already recorded,
// whatever its state, is left alone, so the outbox may hand the same events again
// (acknowledge the outbox entry only after Enqueue returns nil). A subscription created
// after Enqueue does not get the event. Errors: engine.ErrUnavailable.
//
// The records go in first and name their batch; the batches follow. A crash between
// the two leaves records whose batch does not exist: when the outbox hands their
// events again, Enqueue finds that out and queues them (requeue).
func (s *Service) Enqueue(ctx context.Context, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	subs, err := s.subDocs(ctx)
	if err != nil {
		return err
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	var recs []any
	var items []item
	batchOf := map[string]string{} // subscription -> its current batch id
	count := map[string]int{}
	for _, e := range events {
		var body []byte
		for _, sub := range subs {
			if !slices.Contains(sub.Events, e.Type) {
				continue
			}
			if body == nil {
				if body, err = e.Body(); err != nil {
					return fmt.Errorf("webhook: enqueue %s: %w", e.ID, err)
				}
			}
			if count[sub.ID]%maxBatch == 0 {
				batchOf[sub.ID] = newID("b_")
			}
			count[sub.ID]++
			id := e.ID + "." + sub.ID
			recs = append(recs, recDoc{ID: id, EventID: e.ID, Endpoint: sub.ID, Type: e.Type, Batch: batchOf[sub.ID], CreatedAt: now})
			items = append(items, item{ID: id, EventID: e.ID, Type: e.Type, Body: string(body), Due: now})
		}
	}
	if len(recs) == 0 {
		return nil
	}
	inserted, err := insertNew(ctx, s.dels, recs)
	if err != nil {
		return dbErr("webhook: enqueue", err)
	}
	var dups []int
	for i, ok := range inserted {
		if !ok {
			dups = append(dups, i)
		}
	}
	requeue, err := s.orphans(ctx, recs, dups)
	if err != nil {
		return err
	}
	batches := map[string]*batchDoc{}
	var order []string
	for i, r := range recs {
		rec := r.(recDoc)
		if !inserted[i] && !requeue[rec.ID] {
			continue
		}
		b := batches[rec.Batch]
		if b == nil {
			b = &batchDoc{ID: rec.Batch, Endpoint: rec.Endpoint, Due: now, LeaseUntil: noLease}
			batches[rec.Batch] = b
			order = append(order, rec.Batch)
		}
		b.Items = append(b.Items, items[i])
		b.Fresh++
		if requeue[rec.ID] {
			if _, err := s.dels.UpdateOne(ctx, bson.M{"_id": rec.ID}, bson.M{"$set": bson.M{"batch": rec.Batch}}); err != nil {
				return dbErr("webhook: enqueue", err)
			}
		}
	}
	if len(order) == 0 {
		return nil
	}
	docs := make([]any, len(order))
	for i, id := range order {
		docs[i] = *batches[id]
	}
	if _, err := insertNew(ctx, s.batches, docs); err != nil {
		return dbErr("webhook: enqueue", err)
	}
	select {
	case s.queued <- struct{}{}: // a worker of this process looks at once
	default:
	}
	return nil
}

// orphans returns which of the records recs[dups] (already there) are in no batch and
// have not ended: their Enqueue stopped between the records and the batches.
func (s *Service) orphans(ctx context.Context, recs []any, dups []int) (map[string]bool, error) {
	if len(dups) == 0 {
		return nil, nil
	}
	ids := make([]string, len(dups))
	for i, d := range dups {
		ids[i] = recs[d].(recDoc).ID
	}
	var ended []outDoc
	if err := findAll(ctx, s.outcomes, bson.M{"_id": bson.M{"$in": ids}}, &ended, options.Find().SetProjection(bson.M{"_id": 1})); err != nil {
		return nil, dbErr("webhook: enqueue", err)
	}
	var stored []recDoc
	if err := findAll(ctx, s.dels, bson.M{"_id": bson.M{"$in": ids}}, &stored); err != nil {
		return nil, dbErr("webhook: enqueue", err)
	}
	var bids []string
	for _, r := range stored {
		bids = append(bids, r.Batch)
	}
	var live []batchDoc
	if err := findAll(ctx, s.batches, bson.M{"_id": bson.M{"$in": bids}}, &live, options.Find().SetProjection(bson.M{"_id": 1})); err != nil {
		return nil, dbErr("webhook: enqueue", err)
	}
	out := map[string]bool{}
	for _, r := range stored {
		if !slices.ContainsFunc(ended, func(o outDoc) bool { return o.ID == r.ID }) &&
			!slices.ContainsFunc(live, func(b batchDoc) bool { return b.ID == r.Batch }) {
			out[r.ID] = true
		}
	}
	return out, nil
}

func findAll(ctx context.Context, c *mongo.Collection, filter any, out any, opts ...*options.FindOptions) error {
	cur, err := c.Find(ctx, filter, opts...)
	if err != nil {
		return err
	}
	return cur.All(ctx, out)
}

// insertNew inserts docs, unordered, and reports which were new; a document whose _id
// is taken is not an error.
func insertNew(ctx context.Context, c *mongo.Collection, docs []any) ([]bool, error) {
	inserted := make([]bool, len(docs))
	for i := range inserted {
		inserted[i] = true
	}
	_, err := c.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	if err != nil && errors.As(err, &bwe) && bwe.WriteConcernError == nil {
		for _, we := range bwe.WriteErrors {
			if we.Code != 11000 {
				return nil, err
			}
			inserted[we.Index] = false
		}
		return inserted, nil
	}
	return inserted, err
}

// Deliveries lists a subscription's deliveries, newest first, at most limit (1 to 1000;
// default 50). Errors: engine.ErrNotFound for an unknown subscription.
func (s *Service) Deliveries(ctx context.Context, subscriptionID string, limit int) ([]Delivery, error) {
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	if _, err := s.subDoc(ctx, subscriptionID); err != nil {
		return nil, err
	}
	var recs []recDoc
	if err := findAll(ctx, s.dels, bson.M{"endpoint": subscriptionID}, &recs, options.Find().
		SetSort(bson.D{{Key: "createdAt", Value: -1}, {Key: "_id", Value: -1}}).SetLimit(int64(limit))); err != nil {
		return nil, dbErr("webhook: list deliveries", err)
	}
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	var outs []outDoc
	if err := findAll(ctx, s.outcomes, bson.M{"_id": bson.M{"$in": ids}}, &outs); err != nil {
		return nil, dbErr("webhook: list deliveries", err)
	}
	var bs []batchDoc
	if err := findAll(ctx, s.batches, bson.M{"endpoint": subscriptionID}, &bs); err != nil {
		return nil, dbErr("webhook: list deliveries", err)
	}
	ended := make(map[string]outDoc, len(outs))
	for _, o := range outs {
		ended[o.ID] = o
	}
	pending := map[string]item{}
	for _, b := range bs {
		for _, it := range b.Items {
			pending[it.ID] = it
		}
	}
	out := make([]Delivery, len(recs))
	for i, r := range recs {
		d := Delivery{EventID: r.EventID, Endpoint: r.Endpoint, Type: r.Type, Status: StatusPending, CreatedAt: r.CreatedAt.UTC()}
		if o, ok := ended[r.ID]; ok {
			d.Status, d.Attempts, d.LastStatus, d.LastError, d.DeliveredAt = o.Status, o.Attempts, o.LastStatus, o.LastError, utc(o.DeliveredAt)
		} else if it, ok := pending[r.ID]; ok {
			d.Attempts, d.LastStatus, d.LastError, d.NextAttemptAt = it.Attempts, it.LastStatus, it.LastError, utc(&it.Due)
		} else {
			d.NextAttemptAt = utc(&r.CreatedAt) // queued again when the outbox hands its event again
		}
		out[i] = d
	}
	return out, nil
}

// dueBatches returns up to n batches with a delivery due at now and no lease, skipping
// the endpoints in skip. They come in the server's natural order (about the order of
// insertion) rather than sorted by due: a sort makes a server without a usable index
// (FerretDB on SQLite) read and decode the whole backlog on every poll, where an
// unsorted limited scan stops at the n-th match.
func (s *Service) dueBatches(ctx context.Context, now time.Time, skip []string, n int) ([]batchDoc, error) {
	filter := bson.M{"due": bson.M{"$lte": now}, "leaseUntil": bson.M{"$lte": now}}
	if len(skip) > 0 {
		filter["endpoint"] = bson.M{"$nin": skip}
	}
	var docs []batchDoc
	if err := findAll(ctx, s.batches, filter, &docs, options.Find().SetLimit(int64(n))); err != nil {
		return nil, dbErr("webhook: due deliveries", err)
	}
	return docs, nil
}

// maxTakeovers bounds how many times one wave's lease is taken over from workers that
// let it expire.
const maxTakeovers = 8

func claimID(b batchDoc, gen int) string { return fmt.Sprintf("%s#%d#%d", b.ID, b.Version, gen) }

// lease is a claimed wave: the batch as it stood when the claim was taken (nobody else
// changes it while the lease holds), and the claim's _id.
type lease struct {
	b   batchDoc
	cid string
}

// claim takes the lease on the next wave of batch b (as a due scan read it) for owner
// until `until`. A lease is a document inserted under "batchId#version#generation": of
// any number of workers racing for it, the one whose insert succeeds has it. A lease
// that expired (its worker died or stalled) is taken over: whoever deletes it may
// insert the next generation, and its old holder, finding it gone, records nothing.
//
// Then the batch is marked leased, if it is still at the version the scan read: a scan
// can be stale (the wave may have been made and recorded since), and then the new
// lease is dropped.
func (s *Service) claim(ctx context.Context, b batchDoc, owner string, now, until time.Time) (lease, bool, error) {
	cid, ok, err := s.takeLease(ctx, b, owner, now, until)
	if err != nil || !ok {
		return lease{}, false, err
	}
	res, err := s.batches.UpdateOne(ctx, bson.M{"_id": b.ID, "version": b.Version}, bson.M{"$set": bson.M{"leaseUntil": until}})
	if err != nil {
		return lease{}, false, dbErr("webhook: claim", err)
	}
	if res.MatchedCount == 0 {
		_, err := s.claims.DeleteOne(ctx, bson.M{"_id": cid})
		return lease{}, false, dbErr("webhook: claim", err)
	}
	return lease{b, cid}, true, nil
}

func (s *Service) takeLease(ctx context.Context, b batchDoc, owner string, now, until time.Time) (string, bool, error) {
	for gen := range maxTakeovers {
		cid := claimID(b, gen)
		_, err := s.claims.InsertOne(ctx, claimDoc{ID: cid, Batch: b.ID, Owner: owner, Until: until})
		if err == nil {
			return cid, true, nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return "", false, dbErr("webhook: claim", err)
		}
		var held claimDoc
		err = s.claims.FindOne(ctx, bson.M{"_id": cid}).Decode(&held)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue // just removed: by its holder (the wave was recorded) or by a takeover
		}
		if err != nil {
			return "", false, dbErr("webhook: claim", err)
		}
		if held.Until.After(now) {
			return "", false, nil // another worker has it
		}
		if _, err := s.claims.DeleteOne(ctx, bson.M{"_id": cid}); err != nil {
			return "", false, dbErr("webhook: claim", err)
		}
	}
	return "", false, nil
}

// outcome is what an attempt leads to.
type outcome struct {
	status     string // StatusPending (a retry is scheduled), StatusDelivered or StatusFailed
	httpStatus int
	err        string
	next       *time.Time // with StatusPending
	at         time.Time
}

// finish records the wave made under lease l: outcomes[i] is the attempt's result for
// the batch item of that id. It reports whether the lease still held (a lease taken
// over means the new holder records the wave, and this record is dropped). The
// outcomes of ended deliveries are inserted first, then the batch is rewritten (or
// removed, once empty) and last the lease is removed: a crash in between leaves a
// lease that expires, and its taker finds the batch moved on, or makes the attempts
// again (at least once).
func (s *Service) finish(ctx context.Context, l lease, owner string, outcomes map[string]outcome) (bool, error) {
	var held claimDoc
	err := s.claims.FindOne(ctx, bson.M{"_id": l.cid}).Decode(&held)
	if errors.Is(err, mongo.ErrNoDocuments) || (err == nil && held.Owner != owner) {
		return false, nil
	}
	if err != nil {
		return false, dbErr("webhook: record attempts", err)
	}
	b := l.b
	b.Items, b.Fresh, b.Retrying = nil, 0, 0
	b.Due = time.Time{}
	var ended []any
	for _, it := range l.b.Items {
		if o, ok := outcomes[it.ID]; ok {
			it.Attempts++
			it.LastStatus, it.LastError = o.httpStatus, o.err
			if o.status != StatusPending {
				d := outDoc{ID: it.ID, Status: o.status, Attempts: it.Attempts, LastStatus: o.httpStatus, LastError: o.err, EndedAt: o.at}
				if o.status == StatusDelivered {
					at := o.at
					d.DeliveredAt = &at
				}
				ended = append(ended, d)
				continue
			}
			it.Due = *o.next
		}
		b.Items = append(b.Items, it)
		if it.Attempts == 0 {
			b.Fresh++
		} else {
			b.Retrying++
		}
		if b.Due.IsZero() || it.Due.Before(b.Due) {
			b.Due = it.Due
		}
	}
	if len(ended) > 0 {
		if _, err := insertNew(ctx, s.outcomes, ended); err != nil {
			return false, dbErr("webhook: record attempts", err)
		}
	}
	at := bson.M{"_id": b.ID, "version": l.b.Version}
	if len(b.Items) == 0 {
		_, err = s.batches.DeleteOne(ctx, at)
	} else {
		_, err = s.batches.UpdateOne(ctx, at, bson.M{"$set": bson.M{"version": b.Version + 1, "due": b.Due,
			"leaseUntil": noLease, "fresh": b.Fresh, "retrying": b.Retrying, "items": b.Items}})
	}
	if err != nil {
		return false, dbErr("webhook: record attempts", err)
	}
	if _, err := s.claims.DeleteOne(ctx, bson.M{"_id": l.cid}); err != nil {
		return false, dbErr("webhook: drop lease", err)
	}
	return true, nil
}

// backlog counts pending deliveries: first attempts not yet made, and retries.
func (s *Service) backlog(ctx context.Context) (fresh, retrying int64, err error) {
	var bs []batchDoc
	if err := findAll(ctx, s.batches, bson.M{}, &bs, options.Find().SetProjection(bson.M{"fresh": 1, "retrying": 1})); err != nil {
		return 0, 0, dbErr("webhook: backlog", err)
	}
	for _, b := range bs {
		fresh += int64(b.Fresh)
		retrying += int64(b.Retrying)
	}
	return fresh, retrying, nil
}
