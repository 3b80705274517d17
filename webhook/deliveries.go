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

// delDoc is a delivery as stored, under _id "eventId.endpoint". The lease (owner,
// leaseUntil) says which worker is attempting it; leaseUntil is the epoch when none is.
type delDoc struct {
	ID            string     `bson:"_id"`
	EventID       string     `bson:"eventId"`
	Endpoint      string     `bson:"endpoint"`
	Type          string     `bson:"type"`
	Body          string     `bson:"body"` // the request body, fixed at enqueue
	Status        string     `bson:"status"`
	Attempts      int        `bson:"attempts"`
	LastStatus    int        `bson:"lastStatus"`
	LastError     string     `bson:"lastError"`
	NextAttemptAt *time.Time `bson:"nextAttemptAt"`
	DeliveredAt   *time.Time `bson:"deliveredAt"`
	CreatedAt     time.Time  `bson:"createdAt"`
	Owner         string     `bson:"owner"`
	LeaseUntil    time.Time  `bson:"leaseUntil"`
}

func (d delDoc) delivery() Delivery {
	return Delivery{EventID: d.EventID, Endpoint: d.Endpoint, Type: d.Type, Status: d.Status, Attempts: d.Attempts,
		LastStatus: d.LastStatus, LastError: d.LastError, NextAttemptAt: utc(d.NextAttemptAt),
		DeliveredAt: utc(d.DeliveredAt), CreatedAt: d.CreatedAt.UTC()}
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// noLease is leaseUntil of a delivery no worker holds.
var noLease = time.Unix(0, 0).UTC()

// Enqueue records a pending delivery of each event to each subscription that wants its
// type, due now. It is idempotent: an (event, subscription) pair already recorded,
// whatever its state, is left alone, so the outbox may hand the same events again
// (acknowledge the outbox entry only after Enqueue returns nil). A subscription created
// after Enqueue does not get the event. Errors: engine.ErrUnavailable.
func (s *Service) Enqueue(ctx context.Context, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	subs, err := s.subDocs(ctx)
	if err != nil {
		return err
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	var docs []any
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
			next := now
			docs = append(docs, delDoc{ID: e.ID + "." + sub.ID, EventID: e.ID, Endpoint: sub.ID, Type: e.Type,
				Body: string(body), Status: StatusPending, NextAttemptAt: &next, CreatedAt: now, LeaseUntil: noLease})
		}
	}
	if len(docs) == 0 {
		return nil
	}
	_, err = s.dels.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	if err != nil && errors.As(err, &bwe) && bwe.WriteConcernError == nil {
		for _, we := range bwe.WriteErrors {
			if we.Code != 11000 {
				return dbErr("webhook: enqueue", err)
			}
		}
		return nil // every failure was "already there"
	}
	return dbErr("webhook: enqueue", err)
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
	cur, err := s.dels.Find(ctx, bson.M{"endpoint": subscriptionID}, options.Find().
		SetSort(bson.D{{Key: "createdAt", Value: -1}, {Key: "_id", Value: -1}}).SetLimit(int64(limit)).
		SetProjection(bson.M{"body": 0}))
	if err != nil {
		return nil, dbErr("webhook: list deliveries", err)
	}
	var docs []delDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, dbErr("webhook: list deliveries", err)
	}
	out := make([]Delivery, len(docs))
	for i, d := range docs {
		out[i] = d.delivery()
	}
	return out, nil
}

// dueDeliveries returns the ids and endpoints of up to n pending deliveries due at now
// and not leased, oldest due first, skipping the endpoints in skip.
func (s *Service) dueDeliveries(ctx context.Context, now time.Time, skip []string, n int) ([]delDoc, error) {
	filter := bson.M{"status": StatusPending, "nextAttemptAt": bson.M{"$lte": now}, "leaseUntil": bson.M{"$lte": now}}
	if len(skip) > 0 {
		filter["endpoint"] = bson.M{"$nin": skip}
	}
	cur, err := s.dels.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "nextAttemptAt", Value: 1}, {Key: "_id", Value: 1}}).
		SetLimit(int64(n)).SetProjection(bson.M{"_id": 1, "endpoint": 1}))
	if err != nil {
		return nil, dbErr("webhook: due deliveries", err)
	}
	var docs []delDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, dbErr("webhook: due deliveries", err)
	}
	return docs, nil
}

// claim takes the lease of a due delivery for owner until `until` and counts the
// attempt, in one conditional update of its document: of any number of workers racing
// for it, one gets it (ok) and the others see it taken. A worker that dies holding a
// lease leaves the delivery to be claimed again when the lease expires.
func (s *Service) claim(ctx context.Context, id, owner string, now, until time.Time) (delDoc, bool, error) {
	var d delDoc
	err := s.dels.FindOneAndUpdate(ctx,
		bson.M{"_id": id, "status": StatusPending, "nextAttemptAt": bson.M{"$lte": now}, "leaseUntil": bson.M{"$lte": now}},
		bson.M{"$set": bson.M{"owner": owner, "leaseUntil": until}, "$inc": bson.M{"attempts": 1}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return d, false, nil
	}
	if err != nil {
		return d, false, dbErr("webhook: claim", err)
	}
	return d, true, nil
}

// outcome is what an attempt leads to.
type outcome struct {
	status     string // StatusPending (a retry is scheduled), StatusDelivered or StatusFailed
	httpStatus int
	err        string
	next       *time.Time // with StatusPending
	at         time.Time
}

// finish records an attempt's outcome and drops the lease, if owner still holds it (if
// its lease expired and another worker took the delivery, that worker's record counts).
func (s *Service) finish(ctx context.Context, id, owner string, o outcome) (bool, error) {
	set := bson.M{"status": o.status, "lastStatus": o.httpStatus, "lastError": o.err, "nextAttemptAt": o.next,
		"owner": "", "leaseUntil": noLease}
	if o.status == StatusDelivered {
		at := o.at
		set["deliveredAt"] = &at
	}
	res, err := s.dels.UpdateOne(ctx, bson.M{"_id": id, "owner": owner}, bson.M{"$set": set})
	if err != nil {
		return false, dbErr("webhook: record attempt", err)
	}
	return res.MatchedCount == 1, nil
}

// backlog counts pending deliveries: first attempts not yet made, and retries.
func (s *Service) backlog(ctx context.Context) (fresh, retrying int64, err error) {
	if fresh, err = s.dels.CountDocuments(ctx, bson.M{"status": StatusPending, "attempts": 0}); err != nil {
		return 0, 0, dbErr("webhook: backlog", err)
	}
	if retrying, err = s.dels.CountDocuments(ctx, bson.M{"status": StatusPending, "attempts": bson.M{"$gt": 0}}); err != nil {
		return 0, 0, dbErr("webhook: backlog", err)
	}
	return fresh, retrying, nil
}
