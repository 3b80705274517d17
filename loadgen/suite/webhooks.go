package suite

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/embedded"
	"github.com/flashstock/flashstock/loadgen"
	stocksync "github.com/flashstock/flashstock/sync"
)

// WebhookEndpoints are the subscription counts RunWebhooks compares.
var WebhookEndpoints = []int{0, 1, 10}

// RunWebhooks measures what webhooks cost checkout and how fast events arrive
// (`flashstock bench -webhooks`), in one run on one Redis and one MongoDB-compatible
// server (f.MongoURI, or an embedded FerretDB on SQLite):
//
//   - Checkout throughput (hot SKU, this driver, f.WrkDuration/2 per run) with 0, 1
//     and 10 subscribed endpoints (fast local receivers, every event type), each count
//     Rounds times, interleaved, on a fresh server (ROLE=all: API, syncer, webhook
//     feeder and worker) and a fresh database each time. Deliveries lag behind the
//     run; what is compared is the checkouts/s, and the CPU per checkout of the server
//     (API, syncer, feeder, worker) and of the rest (this driver, which hosts the
//     receivers and the embedded FerretDB, and Redis): on a small shared machine the
//     database's CPU is taken from checkout, where a real deployment has it elsewhere.
//     With f.WorkerNice > 0 each run is two processes instead, as a deployment on
//     shared cores would have it: the API (ROLE=api, measured) and a worker (ROLE=worker:
//     syncer, feeder, delivery) at nice f.WorkerNice, so the asynchronous work and the
//     database work it asks for take the cores checkout leaves.
//   - Delivery latency: a flash-sale storm (f.Buyers buyers at f.Stock units, units
//     returned by cancellations meanwhile) with each count of endpoints, and every
//     event's receipt time minus its timestamp (the outbox's commit time), until every
//     order.confirmed of the storm has arrived at every endpoint.
func RunWebhooks(ctx context.Context, f Options) (*loadgen.Report, error) {
	s, dir, srv, cleanup, err := newSuite(ctx, f, "flashstock-bench-webhooks-")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	mongoURI := f.MongoURI
	switch {
	case mongoURI != "":
	case f.WorkerNice > 0:
		// The database at the worker's priority too: the work the worker asks of it then
		// takes the cores checkout leaves, as with a MongoDB of its own.
		m, uri, err := startMongo(ctx, filepath.Join(dir, "ferretdb"), f.WorkerNice)
		if err != nil {
			return nil, err
		}
		defer m.stop()
		mongoURI = uri
		s.say("embedded FerretDB (SQLite) at %s, its own process at nice %d", uri, f.WorkerNice)
	default:
		m, err := embedded.StartMongo(ctx, filepath.Join(dir, "ferretdb"), "127.0.0.1:0", nil)
		if err != nil {
			return nil, err
		}
		defer m.Close()
		mongoURI = m.URI
		s.say("embedded FerretDB (SQLite) at %s, in the driver's process", m.URI)
	}
	rdb, stop, err := redisClient("redis://"+srv.Addr, 4)
	if err != nil {
		return nil, err
	}
	defer stop()
	secret, key := make([]byte, 32), make([]byte, 32)
	_, _ = rand.Read(secret)
	_, _ = rand.Read(key)
	env := map[string]string{"REDIS_URL": "redis://" + srv.Addr, "MONGODB_URI": mongoURI,
		"JWT_SECRET": hex.EncodeToString(secret), "WEBHOOK_SECRET_KEY": base64.StdEncoding.EncodeToString(key),
		"WEBHOOK_ALLOW_PRIVATE": "true", "RATE_LIMIT_PER_MINUTE": "0", "ROLE": "all", "LOG_LEVEL": "warn"}
	run := 0
	// one starts a fresh server on a fresh database with n endpoints, runs cfg, and
	// returns the result, the receivers and a function that stops the server.
	one := func(n int, cfg loadgen.Config, name string) (*loadgen.Result, []*receiver, func(), error) {
		run++
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			return nil, nil, nil, err
		}
		env["MONGODB_DATABASE"] = fmt.Sprintf("bench_webhooks_%d", run)
		apiEnv := env
		if f.WorkerNice > 0 {
			apiEnv = maps.Clone(env)
			apiEnv["ROLE"] = "api"
		}
		server, h, err := s.startServer(filepath.Join(dir, fmt.Sprintf("server-%d", run)), apiEnv, f)
		if err != nil {
			return nil, nil, nil, err
		}
		done := func() { h.Close(); server.stop() }
		if f.WorkerNice > 0 {
			workerEnv := maps.Clone(env)
			workerEnv["ROLE"] = "worker"
			worker, err := startWorker(ctx, filepath.Join(dir, fmt.Sprintf("worker-%d", run)), workerEnv, f.WorkerNice,
				func() bool { return hasGroup(ctx, rdb, stocksync.WebhookGroup) })
			if err != nil {
				done()
				return nil, nil, nil, err
			}
			done = func() { h.Close(); server.stop(); worker.stop() }
		}
		recvs, err := subscribe(ctx, h, n)
		if err != nil {
			done()
			return nil, nil, nil, err
		}
		var r *loadgen.Result
		err = s.measure(func() (*loadgen.Result, error) {
			var err error
			r, err = loadgen.Run(ctx, renamed{h, name}, cfg, s.progress)
			return r, err
		})
		if err != nil {
			done()
			closeAll(recvs)
			return nil, nil, nil, err
		}
		return r, recvs, func() { done(); closeAll(recvs) }, nil
	}

	if f.WorkerNice > 0 {
		s.rep.Notes = append(s.rep.Notes, fmt.Sprintf("each run: the API (ROLE=api, the measured server) and a ROLE=worker process at nice %d", f.WorkerNice))
	} else {
		s.rep.Notes = append(s.rep.Notes, "each run: one ROLE=all process (API, syncer, webhook feeder and worker)")
	}
	short := f.WrkDuration / 2
	rate, serverCPU, otherCPU := map[int][]float64{}, map[int][]float64{}, map[int][]float64{}
	for round := range f.Rounds {
		for _, n := range WebhookEndpoints {
			s.say("round %d: hot checkouts for %s with %d endpoint(s)", round+1, short, n)
			cfg := loadgen.Config{Scenario: loadgen.Hot, Duration: short, Concurrency: f.Concurrency, Users: f.Users}
			r, _, done, err := one(n, cfg, fmt.Sprintf("http webhooks=%d", n))
			if err != nil {
				return s.rep, err
			}
			done()
			rate[n] = append(rate[n], r.SuccessesPerSecond)
			serverCPU[n] = append(serverCPU[n], r.ServerCPU)
			otherCPU[n] = append(otherCPU[n], r.DriverCPU+r.RedisCPU)
		}
	}
	base := median(rate[0])
	for _, n := range WebhookEndpoints[1:] {
		got := median(rate[n])
		s.rep.AddRatio(fmt.Sprintf("hot checkouts/s, median of %d: %d endpoint(s) ÷ none", f.Rounds, n), got, base)
		s.rep.AddRatio(fmt.Sprintf("server CPU µs per checkout, median of %d: %d endpoint(s) ÷ none", f.Rounds, n),
			median(serverCPU[n]), median(serverCPU[0]))
		s.rep.AddRatio(fmt.Sprintf("driver+FerretDB+Redis CPU µs per checkout, median of %d: %d endpoint(s) ÷ none", f.Rounds, n),
			median(otherCPU[n]), median(otherCPU[0]))
		if base > 0 {
			slow := 100 * (1 - got/base)
			s.rep.Notes = append(s.rep.Notes, fmt.Sprintf("%d endpoint(s): checkout %.1f%% slower than with none (%.0f vs %.0f checkouts/s, medians of %d; target ≤ 5%%: %s)",
				n, slow, got, base, f.Rounds, met(slow <= 5)))
		}
	}

	for _, n := range WebhookEndpoints[1:] {
		s.say("flash-sale storm of %d buyers with %d endpoint(s); waiting for every order.confirmed", f.Buyers, n)
		cfg := loadgen.Config{Scenario: loadgen.Storm, Buyers: f.Buyers, Stock: f.Stock, Concurrency: f.Concurrency, Users: f.Users,
			CancelEvery: f.CancelEvery}
		r, recvs, done, err := one(n, cfg, fmt.Sprintf("http webhooks=%d", n))
		if err != nil {
			return s.rep, err
		}
		lat, waited, err := drain(ctx, recvs, int(r.Successes), 10*time.Minute)
		done()
		if err != nil {
			return s.rep, err
		}
		slices.Sort(lat)
		s.rep.Notes = append(s.rep.Notes, fmt.Sprintf(
			"storm with %d endpoint(s): %d events delivered (%d orders), commit to receipt p50 %.0f ms, p99 %.0f ms, max %.0f ms; the last order.confirmed arrived %.1f s after the storm ended",
			n, len(lat), r.Successes, pct(lat, 50), pct(lat, 99), pct(lat, 100), waited.Seconds()))
	}
	return s.rep, nil
}

// hasGroup reports whether the outbox has the consumer group (a worker that made it
// reads every entry from then on).
func hasGroup(ctx context.Context, rdb *redis.Client, group string) bool {
	groups, err := rdb.XInfoGroups(ctx, engine.NewKeys("0").Outbox()).Result()
	if err != nil {
		return false
	}
	return slices.ContainsFunc(groups, func(g redis.XInfoGroup) bool { return g.Name == group })
}

// receiver is a fast webhook endpoint: it answers 204 at once and notes each event's
// type and its latency from the event's timestamp.
type receiver struct {
	srv       *httptest.Server
	mu        sync.Mutex
	confirmed map[string]bool // order.confirmed webhook-ids
	latency   map[string]float64
}

func newReceiver() *receiver {
	r := &receiver{confirmed: map[string]bool{}, latency: map[string]float64{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		at := time.Now()
		body, _ := io.ReadAll(req.Body)
		var ev struct {
			Type      string    `json:"type"`
			Timestamp time.Time `json:"timestamp"`
		}
		_ = json.Unmarshal(body, &ev)
		id := req.Header.Get("webhook-id")
		r.mu.Lock()
		if _, seen := r.latency[id]; !seen {
			r.latency[id] = float64(at.Sub(ev.Timestamp).Microseconds()) / 1000
		}
		if ev.Type == "order.confirmed" {
			r.confirmed[id] = true
		}
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	return r
}

// subscribe starts n receivers and subscribes each to every event type.
func subscribe(ctx context.Context, h *loadgen.HTTP, n int) ([]*receiver, error) {
	var out []*receiver
	for range n {
		r := newReceiver()
		out = append(out, r)
		body, _ := json.Marshal(map[string]any{"url": r.srv.URL, "events": []string{"order.confirmed", "order.cancelled",
			"hold.expired", "inventory.low_stock", "inventory.sold_out", "inventory.back_in_stock"}})
		status, resp, err := h.Admin(ctx, http.MethodPost, "/api/v1/admin/webhooks", body)
		if err == nil && status != http.StatusCreated {
			err = fmt.Errorf("subscribe: HTTP %d: %s", status, resp)
		}
		if err != nil {
			closeAll(out)
			return nil, err
		}
	}
	return out, nil
}

func closeAll(rs []*receiver) {
	for _, r := range rs {
		r.srv.Close()
	}
}

// drain waits until every receiver has had orders order.confirmed events, and returns
// every first receipt's latency (ms) and how long it waited.
func drain(ctx context.Context, rs []*receiver, orders int, limit time.Duration) ([]float64, time.Duration, error) {
	start := time.Now()
	for {
		done := true
		for _, r := range rs {
			r.mu.Lock()
			if len(r.confirmed) < orders {
				done = false
			}
			r.mu.Unlock()
		}
		if done {
			break
		}
		if time.Since(start) > limit {
			return nil, 0, fmt.Errorf("webhooks: not every order.confirmed arrived within %s", limit)
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	waited := time.Since(start)
	var lat []float64
	for _, r := range rs {
		r.mu.Lock()
		for _, l := range r.latency {
			lat = append(lat, l)
		}
		r.mu.Unlock()
	}
	return lat, waited, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pct is the p-th percentile of sorted xs (nearest rank).
func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
