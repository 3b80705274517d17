package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
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
// document written (FerretDB milliseconds each, whatever its size, and on SQLite a scan
// of the collection for any filter but an insert), and a flash sale makes thousands of
// events a second for each subscription:
//
//   - webhook_batches (batchDoc): the work. The events one Enqueue call gives one
//     subscription, up to maxBatch, form one batch document under an id derived from
//     them, which carries each pending delivery's body and retry state and loses it
//     when the delivery ends. An emptied batch stays as a small tombstone for a day, so
//     that the same events enqueued again (the outbox hands an entry again when its
//     acknowledgement was lost) find their batch and add nothing.
//   - webhook_claims (claimDoc): leases, one per wave being sent.
//   - webhook_outcomes (outDoc): how the deliveries of one wave ended, one document
//     per wave.
//
// A worker claims a wave (insert a lease, check the batch's version), sends the
// wave's due deliveries, at most MaxPerEndpoint at a time, and records the wave:
// outcomes in one insert, the batch in one update, the lease in one delete. That is
// five writes and reads per wave of up to maxBatch deliveries. Exclusivity comes from inserts
// into unique _ids, never from a conditional update alone (FerretDB makes those a read,
// a check and a write).

// batchDoc is a batch of pending deliveries to one subscription. Version counts the
// waves recorded: a lease is on one version, so a stale read of the batch cannot lead
// to a second attempt. Due is the earliest item's. Fresh and Retrying count the items
// not attempted yet and those waiting for a retry. EndedAt is set once no item is left.
// Nothing in it says whether a worker holds it: that is the claims' business, so
// taking a lease writes nothing here (on FerretDB every write of a batch costs a scan of
// the collection).
type batchDoc struct {
	ID       string     `bson:"_id"`
	Endpoint string     `bson:"endpoint"`
	Version  int        `bson:"version"`
	Due      time.Time  `bson:"due"`
	Fresh    int        `bson:"fresh"`
	Retrying int        `bson:"retrying"`
	Items    []item     `bson:"items"`
	EndedAt  *time.Time `bson:"endedAt"`
}

// item is one pending delivery in a batch.
type item struct {
	EventID    string    `bson:"eventId"`
	Type       string    `bson:"type"`
	Body       string    `bson:"body"` // the request body, fixed at enqueue
	Attempts   int       `bson:"attempts"`
	Due        time.Time `bson:"due"`
	LastStatus int       `bson:"lastStatus"`
	LastError  string    `bson:"lastError"`
	CreatedAt  time.Time `bson:"createdAt"`
}

// outDoc is how the deliveries of one wave ended, under "batchId#version".
type outDoc struct {
	ID       string    `bson:"_id"`
	Endpoint string    `bson:"endpoint"`
	At       time.Time `bson:"at"`
	Items    []ended   `bson:"items"`
}

// ended is how one delivery ended.
type ended struct {
	EventID     string     `bson:"eventId"`
	Type        string     `bson:"type"`
	Status      string     `bson:"status"` // StatusDelivered or StatusFailed
	Attempts    int        `bson:"attempts"`
	LastStatus  int        `bson:"lastStatus"`
	LastError   string     `bson:"lastError"`
	DeliveredAt *time.Time `bson:"deliveredAt"`
	CreatedAt   time.Time  `bson:"createdAt"`
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

// never is the due time of an ended batch.
var never = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// maxBatch bounds the deliveries in one batch document, and so in one wave.
const maxBatch = 32

// tombstoneFor is how long an ended batch is kept to make Enqueue idempotent.
const tombstoneFor = 24 * time.Hour

// Enqueue records a pending delivery of each event to each subscription that wants its
// type, due now, in batches. It is idempotent for the same events: a batch's id is
// derived from its subscription and its events' ids, and a batch already there, pending
// or ended (up to a day ago), is left alone, so the outbox may hand the same events
// again (acknowledge the outbox entry only after Enqueue returns nil). Events handed
// again in another grouping (after a feeder crash, with other entries) may be delivered
// twice, with the same webhook-id: receivers dedupe. A subscription created after
// Enqueue does not get the event. Errors: engine.ErrUnavailable.
func (s *Service) Enqueue(ctx context.Context, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	subs, err := s.subDocs(ctx)
	if err != nil {
		return err
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	bodies := make([]string, len(events))
	var docs []any
	for _, sub := range subs {
		var b *batchDoc
		ids := sha256.New()
		seen := map[string]bool{}
		flush := func() {
			if b != nil {
				b.ID = "b_" + hex.EncodeToString(ids.Sum(nil)[:16])
				docs = append(docs, *b)
				b = nil
				ids.Reset()
			}
		}
		for i, e := range events {
			if !slices.Contains(sub.Events, e.Type) || seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			if bodies[i] == "" {
				body, err := e.Body()
				if err != nil {
					return fmt.Errorf("webhook: enqueue %s: %w", e.ID, err)
				}
				bodies[i] = string(body)
			}
			if b == nil {
				b = &batchDoc{Endpoint: sub.ID, Due: now}
				ids.Write([]byte(sub.ID))
			}
			ids.Write([]byte{0})
			ids.Write([]byte(e.ID))
			b.Items = append(b.Items, item{EventID: e.ID, Type: e.Type, Body: bodies[i], Due: now, CreatedAt: now})
			b.Fresh++
			if len(b.Items) == maxBatch {
				flush()
			}
		}
		flush()
	}
	if len(docs) == 0 {
		return nil
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

// maxOutcomeDocs bounds the waves the deliveries route reads back.
const maxOutcomeDocs = 1000

// Deliveries lists a subscription's deliveries, newest first, at most limit (1 to 1000;
// default 50): those pending, and those ended in its last 1,000 waves. Errors:
// engine.ErrNotFound for an unknown subscription.
func (s *Service) Deliveries(ctx context.Context, subscriptionID string, limit int) ([]Delivery, error) {
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	if _, err := s.subDoc(ctx, subscriptionID); err != nil {
		return nil, err
	}
	var bs []batchDoc
	if err := findAll(ctx, s.batches, bson.M{"endpoint": subscriptionID, "endedAt": nil}, &bs); err != nil {
		return nil, dbErr("webhook: list deliveries", err)
	}
	var outs []outDoc
	if err := findAll(ctx, s.outcomes, bson.M{"endpoint": subscriptionID}, &outs, options.Find().
		SetSort(bson.D{{Key: "at", Value: -1}}).SetLimit(maxOutcomeDocs)); err != nil {
		return nil, dbErr("webhook: list deliveries", err)
	}
	var out []Delivery
	for _, b := range bs {
		for _, it := range b.Items {
			out = append(out, Delivery{EventID: it.EventID, Endpoint: subscriptionID, Type: it.Type, Status: StatusPending,
				Attempts: it.Attempts, LastStatus: it.LastStatus, LastError: it.LastError, NextAttemptAt: utc(&it.Due),
				CreatedAt: it.CreatedAt.UTC()})
		}
	}
	for _, o := range outs {
		for _, e := range o.Items {
			out = append(out, Delivery{EventID: e.EventID, Endpoint: subscriptionID, Type: e.Type, Status: e.Status,
				Attempts: e.Attempts, LastStatus: e.LastStatus, LastError: e.LastError, DeliveredAt: utc(e.DeliveredAt),
				CreatedAt: e.CreatedAt.UTC()})
		}
	}
	slices.SortFunc(out, func(a, b Delivery) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.EventID, a.EventID)
	})
	return out[:min(limit, len(out))], nil
}

// dueBatches returns up to n batches with a delivery due at now and no live lease,
// skipping the endpoints in skip. They come in the server's natural order (about the
// order of insertion) rather than sorted by due: a sort makes a server without a usable
// index (FerretDB on SQLite) read and decode the whole backlog on every poll, where an
// unsorted limited scan stops at the n-th match.
func (s *Service) dueBatches(ctx context.Context, now time.Time, skip []string, n int) ([]batchDoc, error) {
	var live []claimDoc
	if err := findAll(ctx, s.claims, bson.M{"until": bson.M{"$gt": now}}, &live, options.Find().SetProjection(bson.M{"batch": 1})); err != nil {
		return nil, dbErr("webhook: due deliveries", err)
	}
	filter := bson.M{"due": bson.M{"$lte": now}}
	if len(live) > 0 {
		leased := make([]string, len(live))
		for i, c := range live {
			leased[i] = c.Batch
		}
		filter["_id"] = bson.M{"$nin": leased}
	}
	if len(skip) > 0 {
		filter["endpoint"] = bson.M{"$nin": skip}
	}
	var docs []batchDoc
	if err := findAll(ctx, s.batches, filter, &docs, options.Find().SetLimit(int64(n))); err != nil {
		return nil, dbErr("webhook: due deliveries", err)
	}
	return docs, nil
}

// purgeTombstones removes the batches that ended more than tombstoneFor ago, and the
// leases that expired more than an hour ago (a worker stopped between recording a wave
// and removing its lease; a lease not taken over is left only by such a crash).
func (s *Service) purgeTombstones(ctx context.Context, now time.Time) error {
	if _, err := s.batches.DeleteMany(ctx, bson.M{"endedAt": bson.M{"$lt": now.Add(-tombstoneFor)}}); err != nil {
		return dbErr("webhook: purge ended batches", err)
	}
	_, err := s.claims.DeleteMany(ctx, bson.M{"until": bson.M{"$lt": now.Add(-time.Hour)}})
	return dbErr("webhook: purge expired leases", err)
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
// Then the batch is read again: a scan can be stale (the wave may have been made and
// recorded since), and if the batch is no longer at the version the scan read, the new
// lease is dropped.
func (s *Service) claim(ctx context.Context, b batchDoc, owner string, now, until time.Time) (lease, bool, error) {
	cid, ok, err := s.takeLease(ctx, b, owner, now, until)
	if err != nil || !ok {
		return lease{}, false, err
	}
	// Read by _id alone: a filter on anything more makes FerretDB decode every batch.
	var cur batchDoc
	err = s.batches.FindOne(ctx, bson.M{"_id": b.ID}, options.FindOne().SetProjection(bson.M{"version": 1})).Decode(&cur)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return lease{}, false, dbErr("webhook: claim", err)
	}
	if err != nil || cur.Version != b.Version {
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

// finish records the wave made under lease l at now: outcomes has the result of each
// attempt made, by event id (a delivery the endpoint's circuit kept back has none). It
// reports whether the lease still held (a lease taken over means the new holder records
// the wave, and this record is dropped). The ended deliveries' outcomes are inserted
// first, then the batch is rewritten (emptied into a tombstone once no delivery is
// left), and last the lease is removed: a crash in between leaves a lease that expires,
// and its taker finds the batch moved on, or makes the attempts again (at least once).
func (s *Service) finish(ctx context.Context, l lease, owner string, outcomes map[string]outcome, now time.Time) (bool, error) {
	var held claimDoc
	err := s.claims.FindOne(ctx, bson.M{"_id": l.cid}).Decode(&held)
	if errors.Is(err, mongo.ErrNoDocuments) || (err == nil && held.Owner != owner) {
		return false, nil
	}
	if err != nil {
		return false, dbErr("webhook: record attempts", err)
	}
	b := l.b
	b.Items, b.Fresh, b.Retrying, b.Due = nil, 0, 0, never
	var done []ended
	for _, it := range l.b.Items {
		if o, ok := outcomes[it.EventID]; ok {
			it.Attempts++
			it.LastStatus, it.LastError = o.httpStatus, o.err
			if o.status != StatusPending {
				e := ended{EventID: it.EventID, Type: it.Type, Status: o.status, Attempts: it.Attempts,
					LastStatus: o.httpStatus, LastError: o.err, CreatedAt: it.CreatedAt}
				if o.status == StatusDelivered {
					at := o.at
					e.DeliveredAt = &at
				}
				done = append(done, e)
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
		b.Due = minTime(b.Due, it.Due)
	}
	if len(done) > 0 {
		doc := outDoc{ID: fmt.Sprintf("%s#%d", b.ID, b.Version), Endpoint: b.Endpoint, At: now.UTC(), Items: done}
		if _, err := insertNew(ctx, s.outcomes, []any{doc}); err != nil {
			return false, dbErr("webhook: record attempts", err)
		}
	}
	set := bson.M{"version": b.Version + 1, "due": b.Due, "fresh": b.Fresh,
		"retrying": b.Retrying, "items": b.Items}
	if len(b.Items) == 0 {
		set["items"], set["endedAt"] = []item{}, now.UTC()
	}
	if _, err := s.batches.UpdateOne(ctx, bson.M{"_id": b.ID}, bson.M{"$set": set}); err != nil {
		return false, dbErr("webhook: record attempts", err)
	}
	if _, err := s.claims.DeleteOne(ctx, bson.M{"_id": l.cid}); err != nil {
		return false, dbErr("webhook: drop lease", err)
	}
	return true, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// backlog counts pending deliveries: first attempts not yet made, and retries.
func (s *Service) backlog(ctx context.Context) (fresh, retrying int64, err error) {
	var bs []batchDoc
	if err := findAll(ctx, s.batches, bson.M{"endedAt": nil}, &bs, options.Find().SetProjection(bson.M{"fresh": 1, "retrying": 1})); err != nil {
		return 0, 0, dbErr("webhook: backlog", err)
	}
	for _, b := range bs {
		fresh += int64(b.Fresh)
		retrying += int64(b.Retrying)
	}
	return fresh, retrying, nil
}
