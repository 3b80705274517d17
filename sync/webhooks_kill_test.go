package sync_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	gosync "sync"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/flashstock/flashstock/internal/testmongo"
	stocksync "github.com/flashstock/flashstock/sync"
	"github.com/flashstock/flashstock/webhook"
)

// workerChildEnv makes the test binary a webhook delivery worker (TestMain): MongoDB's
// URI, the database and the sealing key come in the environment.
const workerChildEnv = "FLASHSTOCK_TEST_WEBHOOK_WORKER"

func workerConfig() webhook.WorkerConfig {
	// Short leases: a delivery claimed by a killed worker is taken over soon.
	return webhook.WorkerConfig{PollEvery: 20 * time.Millisecond, Lease: 2 * time.Second}
}

func runWorkerChild() int {
	ctx := context.Background()
	c, err := mongo.Connect(ctx, options.Client().ApplyURI(os.Getenv("WORKER_MONGO_URI")))
	if err != nil {
		os.Stderr.WriteString("connect: " + err.Error() + "\n")
		return 3
	}
	key, _ := hex.DecodeString(os.Getenv("WORKER_KEY"))
	keys, err := webhook.NewKeyring(key)
	if err != nil {
		return 3
	}
	svc, err := webhook.New(c.Database(os.Getenv("WORKER_DB")), webhook.Config{Keys: keys, Guard: webhook.Guard{AllowPrivate: true}})
	if err != nil {
		return 3
	}
	if err := webhook.NewWorker(svc, workerConfig()).Run(ctx); err != nil { // until killed
		os.Stderr.WriteString("worker: " + err.Error() + "\n")
	}
	return 0
}

// Every order.confirmed of a storm of 1,000 buyers reaches the receiver, every request
// signed by the scheme's rules, exactly once after it dedupes by webhook-id, although
// the worker delivering them is killed (SIGKILL) in the middle and another takes over.
func TestEveryOrderIsDeliveredAcrossAWorkerKill(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*7 + 3)
	}
	keys, err := webhook.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := webhook.New(e.st.Database(), webhook.Config{Keys: keys, Guard: webhook.Guard{AllowPrivate: true}})
	if err != nil {
		t.Fatal(err)
	}
	var mu gosync.Mutex
	seen := map[string]string{} // webhook-id -> order id
	deliveries := 0
	var bad []string
	var verifier *standardwebhooks.Webhook
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		v := verifier
		mu.Unlock()
		if err := v.Verify(body, r.Header); err != nil {
			mu.Lock()
			bad = append(bad, r.Header.Get("webhook-id")+": "+err.Error())
			mu.Unlock()
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var ev struct {
			Data struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &ev)
		time.Sleep(time.Millisecond) // slow enough that a kill lands mid-delivery
		mu.Lock()
		seen[r.Header.Get("webhook-id")] = ev.Data.ID
		deliveries++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	sub, err := svc.CreateSubscription(ctx, webhook.NewSubscription{URL: srv.URL, Events: []string{webhook.OrderConfirmed}})
	if err != nil {
		t.Fatal(err)
	}
	if verifier, err = standardwebhooks.NewWebhook(sub.Secret); err != nil {
		t.Fatal(err)
	}

	const buyers = 1000
	e.product(t, "A", buyers)
	runCtx, stop := context.WithCancel(ctx)
	var wg gosync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	feeder := stocksync.NewFeeder(e.inv, svc, nil)
	feeder.Block = 20 * time.Millisecond
	wg.Go(func() { _ = feeder.Run(runCtx) })
	waitFor(t, func() bool {
		groups, _ := e.rdb.XInfoGroups(ctx, e.inv.OutboxKey()).Result()
		return len(groups) > 0
	})
	ids := e.buy(t, buyers, "A")

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), workerChildEnv+"=1", "WORKER_MONGO_URI="+testmongo.URI(t),
		"WORKER_DB="+e.st.Database().Name(), "WORKER_KEY="+hex.EncodeToString(key))
	var childOut safeBuffer
	child.Stdout, child.Stderr = &childOut, &childOut
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := deliveries
		mu.Unlock()
		if n >= 50 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the worker process ended by itself (%v): %s", err, childOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker process delivered %d in 20 s: %s", n, childOut.String())
		}
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	mu.Lock()
	atKill := len(seen)
	mu.Unlock()
	if atKill >= buyers {
		t.Fatalf("the worker delivered everything before it was killed (%d): the test did not exercise the kill", atKill)
	}

	wg.Go(func() { _ = webhook.NewWorker(svc, workerConfig()).Run(runCtx) })
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= buyers {
			break
		}
		if time.Now().After(deadline) {
			ds, _ := svc.Deliveries(ctx, sub.ID, 5)
			t.Fatalf("after the kill: %d of %d events reached the receiver (killed at %d); newest deliveries %+v", n, buyers, atKill, ds)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("%d requests failed signature verification, e.g. %s", len(bad), bad[0])
	}
	orders := map[string]bool{}
	for _, o := range seen {
		orders[o] = true
	}
	for _, id := range ids {
		if !orders[id] {
			t.Fatalf("order %s never reached the receiver", id)
		}
	}
	if len(seen) != buyers || len(orders) != buyers {
		t.Fatalf("%d webhook-ids for %d orders, want %d each (one id per order)", len(seen), len(orders), buyers)
	}
	t.Logf("killed after %d events; %d deliveries for %d events (%d repeats, deduped by webhook-id)", atKill, deliveries, buyers, deliveries-buyers)
}

// safeBuffer is a bytes.Buffer safe for a child process's writes and the test's reads.
type safeBuffer struct {
	mu gosync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
