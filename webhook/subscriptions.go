package webhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/store"
)

// Collection names.
const (
	colSubscriptions = "webhook_subscriptions"
	colOutcomes      = "webhook_outcomes"
	colBatches       = "webhook_batches"
	colClaims        = "webhook_claims"
)

// Service keeps subscriptions and deliveries in MongoDB. It is safe for concurrent use;
// any number of processes may share one database.
type Service struct {
	cfg                             Config
	subs, outcomes, batches, claims *mongo.Collection
	// queued is signalled when Enqueue has queued deliveries, so that the workers of
	// this process start them without waiting for their next poll.
	queued chan struct{}
}

// New returns a Service on db. Call EnsureIndexes once at start-up.
func New(db *mongo.Database, cfg Config) (*Service, error) {
	if cfg.Keys == nil {
		return nil, errors.New("webhook: Config.Keys is required")
	}
	return &Service{cfg: cfg.withDefaults(), subs: db.Collection(colSubscriptions),
		outcomes: db.Collection(colOutcomes), batches: db.Collection(colBatches), claims: db.Collection(colClaims),
		queued: make(chan struct{}, 1)}, nil
}

// EnsureIndexes creates the secondary indexes the queries use. It is idempotent.
func (s *Service) EnsureIndexes(ctx context.Context) error {
	for _, ix := range []struct {
		c    *mongo.Collection
		keys bson.D
	}{
		{s.outcomes, bson.D{{Key: "endpoint", Value: 1}, {Key: "at", Value: -1}}},
		{s.batches, bson.D{{Key: "due", Value: 1}}},
	} {
		if _, err := ix.c.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: ix.keys}); err != nil {
			return dbErr("webhook: ensure indexes", err)
		}
	}
	return nil
}

// Subscription is an endpoint that receives events. Secret is set only in the answer
// of CreateSubscription: it is shown once.
type Subscription struct {
	ID          string    `json:"id"`
	URL         string    `json:"url"`
	Events      []string  `json:"events"`
	Description string    `json:"description"`
	Secret      string    `json:"secret,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
}

// NewSubscription is what an admin asks for.
type NewSubscription struct {
	URL         string   `json:"url"`
	Events      []string `json:"events"`
	Description string   `json:"description"`
}

type subDoc struct {
	ID          string    `bson:"_id"`
	URL         string    `bson:"url"`
	Events      []string  `bson:"events"`
	Description string    `bson:"description"`
	Secret      string    `bson:"secret"` // sealed by the Keyring, never in the clear
	CreatedAt   time.Time `bson:"createdAt"`
}

func (d subDoc) subscription() Subscription {
	return Subscription{ID: d.ID, URL: d.URL, Events: d.Events, Description: d.Description, CreatedAt: d.CreatedAt.UTC()}
}

// CreateSubscription validates and stores a subscription with a fresh secret, and
// returns it with the secret (the only time it is shown). Errors: *engine.ValidationError
// (matching engine.ErrInvalid) for a bad URL (including one resolving to a refused
// address), no events, an unknown event type or a description over 500 bytes;
// engine.ErrUnavailable.
func (s *Service) CreateSubscription(ctx context.Context, req NewSubscription) (Subscription, error) {
	if len(req.Events) == 0 {
		return Subscription{}, &engine.ValidationError{Field: "events", Reason: "at least one event type"}
	}
	events := make([]string, 0, len(req.Events))
	for _, t := range req.Events {
		if !KnownType(t) {
			return Subscription{}, &engine.ValidationError{Field: "events", Reason: fmt.Sprintf("unknown event type %q", t)}
		}
		if !slices.Contains(events, t) {
			events = append(events, t)
		}
	}
	if len(req.Description) > 500 {
		return Subscription{}, &engine.ValidationError{Field: "description", Reason: "longer than 500 bytes"}
	}
	if err := s.cfg.Guard.CheckURL(ctx, req.URL); err != nil {
		return Subscription{}, err
	}
	id := newID("wh_")
	secret := NewSecret()
	d := subDoc{ID: id, URL: req.URL, Events: events, Description: req.Description,
		Secret: s.cfg.Keys.Seal(id, secret), CreatedAt: s.cfg.Now().UTC().Truncate(time.Millisecond)}
	if _, err := s.subs.InsertOne(ctx, d); err != nil {
		return Subscription{}, dbErr("webhook: create subscription", err)
	}
	sub := d.subscription()
	sub.Secret = secret
	return sub, nil
}

// Subscriptions lists every subscription, oldest first, without secrets.
func (s *Service) Subscriptions(ctx context.Context) ([]Subscription, error) {
	docs, err := s.subDocs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Subscription, len(docs))
	for i, d := range docs {
		out[i] = d.subscription()
	}
	return out, nil
}

func (s *Service) subDocs(ctx context.Context) ([]subDoc, error) {
	cur, err := s.subs.Find(ctx, bson.M{}, options.Find().SetSort(bson.D{{Key: "createdAt", Value: 1}, {Key: "_id", Value: 1}}))
	if err != nil {
		return nil, dbErr("webhook: list subscriptions", err)
	}
	docs := []subDoc{}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, dbErr("webhook: list subscriptions", err)
	}
	return docs, nil
}

// Subscription reads one subscription, without its secret. Errors: engine.ErrNotFound.
func (s *Service) Subscription(ctx context.Context, id string) (Subscription, error) {
	d, err := s.subDoc(ctx, id)
	return d.subscription(), err
}

func (s *Service) subDoc(ctx context.Context, id string) (subDoc, error) {
	var d subDoc
	err := s.subs.FindOne(ctx, bson.M{"_id": id}).Decode(&d)
	return d, dbErr("webhook: subscription "+id, err)
}

// DeleteSubscription removes a subscription; its pending deliveries end failed when a
// worker next picks them. Errors: engine.ErrNotFound.
func (s *Service) DeleteSubscription(ctx context.Context, id string) error {
	res, err := s.subs.DeleteOne(ctx, bson.M{"_id": id})
	if err != nil {
		return dbErr("webhook: delete subscription", err)
	}
	if res.DeletedCount == 0 {
		return fmt.Errorf("webhook: subscription %s: %w", id, engine.ErrNotFound)
	}
	return nil
}

// Rewrap re-encrypts every secret not sealed under the current key (the step of a key
// rotation), and returns how many it changed. Each is a conditional update on _id and
// the old ciphertext; concurrent Rewraps may both write, each a valid sealing of the
// same secret, so they are harmless.
func (s *Service) Rewrap(ctx context.Context) (int, error) {
	docs, err := s.subDocs(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range docs {
		if s.cfg.Keys.current(d.Secret) {
			continue
		}
		secret, err := s.cfg.Keys.Open(d.ID, d.Secret)
		if err != nil {
			return n, fmt.Errorf("webhook: rewrap %s: %w", d.ID, err)
		}
		res, err := s.subs.UpdateOne(ctx, bson.M{"_id": d.ID, "secret": d.Secret},
			bson.M{"$set": bson.M{"secret": s.cfg.Keys.Seal(d.ID, secret)}})
		if err != nil {
			return n, dbErr("webhook: rewrap", err)
		}
		n += int(res.ModifiedCount)
	}
	return n, nil
}

func newID(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// dbErr translates driver errors into the engine's vocabulary, as store does.
func dbErr(op string, err error) error { return store.MongoErr(op, err) }
