package webhook_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/flashstock/flashstock/internal/testmongo"
	"github.com/flashstock/flashstock/webhook"
)

func TestMain(m *testing.M) { os.Exit(testmongo.Main(m)) }

// clock is the tests' time: it moves only when a test moves it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func mustKeyring(tb testing.TB) *webhook.Keyring {
	tb.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	k, err := webhook.NewKeyring(key)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// testConfig is a service configuration on clk, allowing loopback (httptest servers
// listen there), with a jitter that always adds half of its maximum.
func testConfig(tb testing.TB, clk *clock) webhook.Config {
	return webhook.Config{Keys: mustKeyring(tb), Guard: webhook.Guard{AllowPrivate: true}, Now: clk.Now,
		Rand: func() float64 { return 0.5 }}
}

func mustService(tb testing.TB, db *mongo.Database, cfg webhook.Config) *webhook.Service {
	tb.Helper()
	s, err := webhook.New(db, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.EnsureIndexes(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return s
}

func mustSubscribe(tb testing.TB, s *webhook.Service, url string, types ...string) webhook.Subscription {
	tb.Helper()
	if len(types) == 0 {
		types = []string{webhook.OrderConfirmed}
	}
	sub, err := s.CreateSubscription(context.Background(), webhook.NewSubscription{URL: url, Events: types})
	if err != nil {
		tb.Fatalf("create subscription: %v", err)
	}
	return sub
}

func mustEnqueue(tb testing.TB, s *webhook.Service, events ...webhook.Event) {
	tb.Helper()
	if err := s.Enqueue(context.Background(), events); err != nil {
		tb.Fatalf("enqueue: %v", err)
	}
}

// orderEvents returns n order.confirmed events with distinct ids.
func orderEvents(clk *clock, n int) []webhook.Event {
	out := make([]webhook.Event, n)
	for i := range out {
		id := "order-" + strconv.Itoa(i)
		out[i] = webhook.Event{ID: webhook.EventID(webhook.OrderConfirmed, id), Type: webhook.OrderConfirmed,
			At: clk.Now(), Data: map[string]string{"id": id}}
	}
	return out
}

// receiver is a webhook endpoint that checks every request by the scheme's rules
// (with the reference library, and the timestamp against the test clock), counts
// requests by webhook-id, and answers what status says.
type receiver struct {
	srv    *httptest.Server
	clk    *clock
	mu     sync.Mutex
	secret string
	hits   map[string]int // requests by webhook-id
	oks    map[string]int // 2xx answers by webhook-id
	bad    []string       // requests that failed verification
	status func(id string, n int) int
	seen   chan string // every request's webhook-id, if not nil
	block  chan struct{}
}

func newReceiver(tb testing.TB, clk *clock, status func(id string, n int) int) *receiver {
	r := &receiver{clk: clk, hits: map[string]int{}, oks: map[string]int{}, status: status}
	if r.status == nil {
		r.status = func(string, int) int { return http.StatusNoContent }
	}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	tb.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) URL() string { return r.srv.URL + "/hook" }

func (r *receiver) setSecret(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secret = s
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id := req.Header.Get("webhook-id")
	if r.seen != nil {
		r.seen <- id
	}
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.verify(req, body); err != nil {
		r.bad = append(r.bad, fmt.Sprintf("%s: %v", id, err))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.hits[id]++
	code := r.status(id, r.hits[id])
	if code/100 == 2 {
		r.oks[id]++
	}
	w.WriteHeader(code)
}

func (r *receiver) verify(req *http.Request, body []byte) error {
	if req.Method != http.MethodPost || req.Header.Get("content-type") != "application/json" {
		return fmt.Errorf("%s with content-type %q", req.Method, req.Header.Get("content-type"))
	}
	wh, err := standardwebhooks.NewWebhook(r.secret)
	if err != nil {
		return err
	}
	// The library checks the timestamp against the real clock; check it against the
	// test's, with the library's tolerance.
	if err := wh.VerifyIgnoringTimestamp(body, req.Header); err != nil {
		return err
	}
	ts, err := strconv.ParseInt(req.Header.Get("webhook-timestamp"), 10, 64)
	if err != nil {
		return err
	}
	if d := r.clk.Now().Sub(time.Unix(ts, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %d is %v off", ts, d)
	}
	return nil
}

func (r *receiver) counts() (hits, oks map[string]int, bad []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	hits, oks = map[string]int{}, map[string]int{}
	for k, v := range r.hits {
		hits[k] = v
	}
	for k, v := range r.oks {
		oks[k] = v
	}
	return hits, oks, append([]string(nil), r.bad...)
}

func (r *receiver) total() int {
	hits, _, _ := r.counts()
	n := 0
	for _, v := range hits {
		n += v
	}
	return n
}

// round polls once and waits for the deliveries it started.
func round(tb testing.TB, w *webhook.Worker) int {
	tb.Helper()
	n, err := w.Poll(context.Background())
	if err != nil {
		tb.Fatalf("poll: %v", err)
	}
	w.Wait()
	return n
}

func mustDeliveries(tb testing.TB, s *webhook.Service, subID string) map[string]webhook.Delivery {
	tb.Helper()
	ds, err := s.Deliveries(context.Background(), subID, 1000)
	if err != nil {
		tb.Fatalf("deliveries: %v", err)
	}
	out := map[string]webhook.Delivery{}
	for _, d := range ds {
		out[d.EventID] = d
	}
	return out
}

// mapResolver resolves names from a map the test may change.
type mapResolver struct {
	mu    sync.Mutex
	addrs map[string]string
}

func (m *mapResolver) set(host, ip string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.addrs[host] = ip
}

func (m *mapResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ip, ok := m.addrs[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return []net.IPAddr{{IP: net.ParseIP(ip)}}, nil
}
