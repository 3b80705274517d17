package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/api"
	"github.com/flashstock/flashstock/engine"
)

// batchWatch is a go-redis hook that sees every take.lua batch and notes whether one
// ever carried a synthetic buyer ("sim-…") and a live one ("live-…") together.
type batchWatch struct{ mixed, sim, live atomic.Bool }

func (w *batchWatch) DialHook(next redis.DialHook) redis.DialHook { return next }
func (w *batchWatch) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (w *batchWatch) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n == "evalsha" || n == "eval" {
			var sim, live bool
			for _, a := range cmd.Args() {
				s, _ := a.(string)
				sim = sim || strings.HasPrefix(s, "sim-")
				live = live || strings.HasPrefix(s, "live-")
			}
			if sim && live {
				w.mixed.Store(true)
			}
			if sim {
				w.sim.Store(true)
			}
			if live {
				w.live.Store(true)
			}
		}
		return next(ctx, cmd)
	}
}

// serve runs the app on a loopback listener and returns its base URL.
func (h *harness) serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = h.app.Listener(ln) }()
	t.Cleanup(func() { _ = h.app.Shutdown(); <-done })
	return "http://" + ln.Addr().String()
}

// post sends a request over HTTP in the background; the answer arrives on the channel.
func post(t *testing.T, url, tok, body string) <-chan resp {
	t.Helper()
	out := make(chan resp, 1)
	go func() {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- resp{status: -1, body: []byte(err.Error())}
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		out <- resp{status: res.StatusCode, header: res.Header, body: b}
	}()
	return out
}

func (h *harness) level(t testing.TB, sku string) engine.Level {
	t.Helper()
	lv, err := h.inv.Levels(context.Background(), []string{sku})
	if err != nil {
		t.Fatal(err)
	}
	return lv[0]
}

type simReport struct {
	Buyers, Attempted                            int
	Cancelled                                    bool
	Succeeded, OutOfStock, LimitExceeded, Failed int64
	Oversold                                     int64
}

func decodeReport(t testing.TB, r resp) simReport {
	t.Helper()
	want(t, r, 200, "")
	var rep simReport
	if err := json.Unmarshal(r.body, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// While a simulation runs: a second run is refused, live buyers' checkouts succeed and
// never share a batch with synthetic buyers; then shutting the server down stops the
// run early, with the stock consistent, the report matching it, and no per-buyer
// counter left behind.
func TestSimulationIsExclusiveSeparateAndStopsAtShutdown(t *testing.T) {
	h := newHarness(t, api.Config{RequestTimeout: time.Minute})
	watch := &batchWatch{}
	h.rdb.AddHook(watch)
	const stock = 1_000_000
	h.product(t, "SIM", stock, `,"maxPerUser":5`)
	h.product(t, "LIVE", 1000, "")
	// Each synthetic buyer takes 100 lines, so that 100,000 of them take far longer
	// than the test needs to act while they run.
	lines := []string{`{"sku":"SIM","quantity":1}`}
	for i := range engine.MaxLines - 1 {
		sku := "S" + itoa(i)
		mustCreate(t, h, sku, stock)
		lines = append(lines, `{"sku":"`+sku+`","quantity":1}`)
	}
	admin := token(t, "root", api.RoleAdmin)
	url := h.serve(t)

	const buyers = 100_000
	running := post(t, url+"/api/v1/carts/bulk-checkout", admin,
		`{"items":[`+strings.Join(lines, ",")+`],"buyers":100000,"concurrency":1000}`)
	for h.level(t, "SIM").Sold == 0 {
		select {
		case r := <-running:
			t.Fatalf("the run ended before it sold anything: %d %s", r.status, r.body)
		case <-time.After(time.Millisecond):
		}
	}

	want(t, h.do(t, "POST", "/api/v1/carts/bulk-checkout", admin,
		`{"items":[{"sku":"LIVE","quantity":1}],"buyers":10,"concurrency":2}`), 409, "already_exists")

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			tok := token(t, "live-"+itoa(g), api.RoleCustomer)
			for range 5 {
				r := h.do(t, "POST", "/api/v1/checkout", tok, `{"items":[{"sku":"LIVE","quantity":1},{"sku":"SIM","quantity":1}]}`)
				if r.status != 201 {
					t.Errorf("live checkout during the run: %d %s", r.status, r.body)
				}
			}
		})
	}
	wg.Wait()

	shutdown := make(chan error, 1)
	go func() { shutdown <- h.app.ShutdownWithContext(context.Background()) }()
	rep := decodeReport(t, <-running)
	if err := <-shutdown; err != nil {
		t.Fatal(err)
	}

	t.Logf("the run stopped after %d of %d buyers", rep.Attempted, buyers)
	if !rep.Cancelled || rep.Attempted >= buyers || rep.Buyers != buyers {
		t.Fatalf("report: got cancelled %v, attempted %d of %d; want a run stopped early", rep.Cancelled, rep.Attempted, rep.Buyers)
	}
	if got := rep.Succeeded + rep.OutOfStock + rep.LimitExceeded + rep.Failed; got != int64(rep.Attempted) {
		t.Fatalf("outcomes: got %d, want attempted %d", got, rep.Attempted)
	}
	lv := h.level(t, "SIM")
	if lv.Available+lv.Reserved+lv.Sold != stock {
		t.Fatalf("SIM levels %+v: got a total of %d, want %d", lv, lv.Available+lv.Reserved+lv.Sold, stock)
	}
	if live := int64(8 * 5); lv.Sold != rep.Succeeded+live || rep.Oversold != 0 || rep.Failed != 0 {
		t.Fatalf("sold %d: want the run's %d successes + %d live; report %+v", lv.Sold, rep.Succeeded, live, rep)
	}
	if watch.mixed.Load() || !watch.sim.Load() || !watch.live.Load() {
		t.Fatalf("batches: mixed %v (want false), sim %v, live %v", watch.mixed.Load(), watch.sim.Load(), watch.live.Load())
	}
	assertNoSyntheticCounters(t, h, "SIM", 8)
}

// assertNoSyntheticCounters checks that sku's per-user counters hold only the live
// buyers' (liveBuyers of them) and that no run is left to clean up.
func assertNoSyntheticCounters(t *testing.T, h *harness, sku string, liveBuyers int) {
	t.Helper()
	ctx := context.Background()
	fields, err := h.rdb.HKeys(ctx, "fs:{0}:b:"+sku).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fields {
		if strings.HasPrefix(f, "sim-") {
			t.Fatalf("synthetic buyer %s's counter is left (of %d fields)", f, len(fields))
		}
	}
	if len(fields) != liveBuyers {
		t.Fatalf("counters of %s: got %d fields, want the %d live buyers'", sku, len(fields), liveBuyers)
	}
	for _, k := range []string{"fs:{0}:sim:lock", "fs:{0}:sim:runs"} {
		if n, _ := h.rdb.Exists(ctx, k).Result(); n != 0 {
			t.Fatalf("%s is left after the run", k)
		}
	}
}

// A finished run leaves its orders (real sales) but no per-buyer state, and it
// cleans up after a run that crashed before cleaning up.
func TestSimulationLeavesNoPerBuyerCounters(t *testing.T) {
	h := newHarness(t, api.Config{})
	ctx := context.Background()
	h.product(t, "SIM", 300, `,"maxPerUser":2`)
	cust := token(t, "alice", api.RoleCustomer)
	want(t, h.do(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"SIM","quantity":1}]}`), 201, "")
	// A run that crashed: its note and its buyers' counters.
	h.rdb.HSet(ctx, "fs:{0}:sim:runs", "dead01", "3\nSIM")
	h.rdb.HSet(ctx, "fs:{0}:b:SIM", "sim-dead01-0", 1, "sim-dead01-1", 1, "sim-dead01-2", 1)

	rep := decodeReport(t, h.do(t, "POST", "/api/v1/carts/bulk-checkout", token(t, "root", api.RoleAdmin),
		`{"items":[{"sku":"SIM","quantity":2}],"buyers":200,"concurrency":16}`))
	if rep.Succeeded != 149 || rep.OutOfStock != 51 || rep.Attempted != 200 || rep.Cancelled || rep.Oversold != 0 {
		t.Fatalf("report %+v", rep)
	}
	if lv := h.level(t, "SIM"); lv.Sold != 1+2*149 {
		t.Fatalf("sold: got %d, want %d", lv.Sold, 1+2*149)
	}
	assertNoSyntheticCounters(t, h, "SIM", 1)
	if n, _ := h.rdb.HGet(ctx, "fs:{0}:b:SIM", "alice").Int(); n != 1 {
		t.Fatalf("a real buyer's counter: got %d, want 1", n)
	}
}

// A run in progress on another replica (its lock in Redis) refuses a second one.
func TestSimulationRefusedWhileAnotherReplicaRuns(t *testing.T) {
	h := newHarness(t, api.Config{})
	admin := token(t, "root", api.RoleAdmin)
	h.product(t, "SIM", 10, "")
	body := `{"items":[{"sku":"SIM","quantity":1}],"buyers":5,"concurrency":5}`
	h.rdb.Set(context.Background(), "fs:{0}:sim:lock", "another-replica", time.Minute)
	want(t, h.replica().do(t, "POST", "/api/v1/carts/bulk-checkout", admin, body), 409, "already_exists")
	if lv := h.level(t, "SIM"); lv.Available != 10 {
		t.Fatalf("a refused run changed stock: %+v", lv)
	}
	h.rdb.Del(context.Background(), "fs:{0}:sim:lock")
	if rep := decodeReport(t, h.do(t, "POST", "/api/v1/carts/bulk-checkout", admin, body)); rep.Succeeded != 5 {
		t.Fatalf("report %+v", rep)
	}
}
