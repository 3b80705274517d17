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

// delDoc is a delivery as stored, under _id "eventId.endpoint". Attempts counts the
// attempts made and recorded. Owner and leaseUntil say which worker is making the
// next one (a hint for due queries; the lease itself is a claimDoc); leaseUntil is the
// epoch when none is.
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

// dueDeliveries returns the ids, endpoints and attempts of up to n pending deliveries due at now
// and not leased, oldest due first, skipping the endpoints in skip.
func (s *Service) dueDeliveries(ctx context.Context, now time.Time, skip []string, n int) ([]delDoc, error) {
	filter := bson.M{"status": StatusPending, "nextAttemptAt": bson.M{"$lte": now}, "leaseUntil": bson.M{"$lte": now}}
	if len(skip) > 0 {
		filter["endpoint"] = bson.M{"$nin": skip}
	}
	cur, err := s.dels.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "nextAttemptAt", Value: 1}, {Key: "_id", Value: 1}}).
		SetLimit(int64(n)).SetProjection(bson.M{"_id": 1, "endpoint": 1, "attempts": 1}))
	if err != nil {
		return nil, dbErr("webhook: due deliveries", err)
	}
	var docs []delDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, dbErr("webhook: due deliveries", err)
	}
	return docs, nil
}

// claimDoc is one worker's lease on one attempt of one delivery, under _id
// "deliveryId#attempt#generation".
type claimDoc struct {
	ID       string    `bson:"_id"`
	Delivery string    `bson:"delivery"`
	Owner    string    `bson:"owner"`
	Until    time.Time `bson:"until"`
}

// maxTakeovers bounds how many times one attempt's lease is taken over from workers
// that let it expire.
const maxTakeovers = 8

// claim takes the lease on the next attempt of delivery d (as a due query read it) for
// owner until `until`. The lease is a document inserted under the _id
// "deliveryId#attempt#generation": of any number of workers racing for it, the one
// whose insert succeeds has it. An insert is atomic on every MongoDB-compatible server,
// where a conditional update is not (FerretDB reads, modifies and writes back). A lease
// that expired (its worker died) is taken over by inserting the next generation.
//
// The winner then rereads the delivery and checks it still waits for this attempt (a
// due query can be stale: the attempt may have been made and its lease removed since),
// and marks it leased (leaseUntil) so due queries skip it meanwhile.
func (s *Service) claim(ctx context.Context, d delDoc, owner string, now, until time.Time) (delDoc, string, bool, error) {
	attempt := d.Attempts + 1
	for gen := range maxTakeovers {
		cid := fmt.Sprintf("%s#%d#%d", d.ID, attempt, gen)
		_, err := s.claims.InsertOne(ctx, claimDoc{ID: cid, Delivery: d.ID, Owner: owner, Until: until})
		if err == nil {
			return s.leased(ctx, d, cid, owner, until)
		}
		if !mongo.IsDuplicateKeyError(err) {
			return d, "", false, dbErr("webhook: claim", err)
		}
		var held claimDoc
		err = s.claims.FindOne(ctx, bson.M{"_id": cid}).Decode(&held)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return d, "", false, nil // the attempt was made and recorded meanwhile
		}
		if err != nil {
			return d, "", false, dbErr("webhook: claim", err)
		}
		if held.Until.After(now) {
			return d, "", false, nil // another worker has it
		}
	}
	return d, "", false, nil
}

// leased rereads a delivery whose lease cid was just taken, and marks it leased; if it
// no longer waits for this attempt, the lease is dropped and ok is false.
func (s *Service) leased(ctx context.Context, d delDoc, cid, owner string, until time.Time) (delDoc, string, bool, error) {
	var cur delDoc
	err := s.dels.FindOneAndUpdate(ctx, bson.M{"_id": d.ID, "status": StatusPending, "attempts": d.Attempts},
		bson.M{"$set": bson.M{"owner": owner, "leaseUntil": until}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&cur)
	if errors.Is(err, mongo.ErrNoDocuments) {
		_, err = s.claims.DeleteOne(ctx, bson.M{"_id": cid})
		return d, "", false, dbErr("webhook: claim", err)
	}
	if err != nil {
		return d, "", false, dbErr("webhook: claim", err)
	}
	return cur, cid, true, nil
}

// outcome is what an attempt leads to.
type outcome struct {
	status     string // StatusPending (a retry is scheduled), StatusDelivered or StatusFailed
	httpStatus int
	err        string
	next       *time.Time // with StatusPending
	at         time.Time
}

// finish records the outcome of the attempt d.Attempts+1 made under lease cid, and
// then removes the lease (in that order: a worker that takes the lease's _id after its
// removal rereads the delivery and finds the attempt made). If a worker that took over
// the lease has recorded the attempt already, its record stands.
func (s *Service) finish(ctx context.Context, d delDoc, cid string, o outcome) (bool, error) {
	set := bson.M{"attempts": d.Attempts + 1, "status": o.status, "lastStatus": o.httpStatus, "lastError": o.err,
		"nextAttemptAt": o.next, "owner": "", "leaseUntil": noLease}
	if o.status == StatusDelivered {
		at := o.at
		set["deliveredAt"] = &at
	}
	res, err := s.dels.UpdateOne(ctx, bson.M{"_id": d.ID, "attempts": d.Attempts}, bson.M{"$set": set})
	if err != nil {
		return false, dbErr("webhook: record attempt", err)
	}
	if _, err := s.claims.DeleteOne(ctx, bson.M{"_id": cid}); err != nil {
		return false, dbErr("webhook: drop lease", err)
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
