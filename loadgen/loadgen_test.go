package loadgen_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testredis"
	"github.com/flashstock/flashstock/loadgen"
)

func run(t *testing.T, target loadgen.Target, cfg loadgen.Config) *loadgen.Result {
	t.Helper()
	r, err := loadgen.Run(context.Background(), target, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The queue scenario through the engine: everyone joins before the start, the stock
// sells exactly, every admitted buyer gets a unit, everyone else is told sold out.
func TestEngineQueueScenario(t *testing.T) {
	_, rdb := testredis.Start(t)
	inv := engine.NewRedis(rdb, engine.Options{})
	t.Cleanup(inv.Close)
	r := run(t, loadgen.Engine{Inv: inv}, loadgen.Config{Scenario: loadgen.Queue, Buyers: 5000, Stock: 400, Concurrency: 64})
	q := r.Queue
	if q == nil || q.Joins != 5000 || q.Admitted != 400 || q.SoldOut != 4600 || q.Failures != 0 || q.Expired != 0 {
		t.Fatalf("queue figures: %+v", q)
	}
	if r.Attempts != 400 || r.Successes != 400 || r.StockAfter != 0 || r.Oversell != 0 || r.FalseRefusals != 0 || r.Unaccounted != 0 {
		t.Fatalf("checkouts: %+v", r)
	}
}

// The engine keeps every invariant in every scenario, as the tool measures them.
func TestEngineScenariosKeepTheInvariants(t *testing.T) {
	_, rdb := testredis.Start(t)
	inv := engine.NewRedis(rdb, engine.Options{})
	t.Cleanup(inv.Close)
	target := loadgen.Engine{Inv: inv}
	for _, sc := range loadgen.Scenarios {
		t.Run(sc, func(t *testing.T) {
			r := run(t, target, loadgen.Config{Scenario: sc, Buyers: 3000, Concurrency: 64, Users: 500})
			if r.Attempts != 3000 || len(r.Errors) != 0 {
				t.Fatalf("attempts %d, errors %v %v", r.Attempts, r.Errors, r.ErrorSamples)
			}
			if r.Oversell != 0 || r.FalseRefusals != 0 || r.Unaccounted != 0 {
				t.Fatalf("oversell %d, false refusals %d, unaccounted %d", r.Oversell, r.FalseRefusals, r.Unaccounted)
			}
			switch sc {
			case loadgen.Hot, loadgen.Holds:
				// Stock equals buyers: everyone gets a unit, the shelf ends empty.
				if r.Successes != 3000 || r.StockAfter != 0 || r.ReservedAfter != 0 {
					t.Fatalf("successes %d, stock after %d, reserved %d", r.Successes, r.StockAfter, r.ReservedAfter)
				}
			case loadgen.Cart:
				if r.Refusals["out_of_stock"] == 0 || r.Successes == 0 {
					t.Fatalf("carts should both sell and run short: %+v", r)
				}
			case loadgen.Storm:
				if r.UnitsReturned == 0 {
					t.Fatal("the canceller returned nothing during the storm")
				}
				// Stock counts what was there, what came back and what was sold again.
				if r.StockAfter != r.StockBefore+r.UnitsReturned-r.UnitsSold {
					t.Fatalf("stock %d → %d with %d returned and %d sold", r.StockBefore, r.StockAfter, r.UnitsReturned, r.UnitsSold)
				}
			}
		})
	}
}

// Both baselines sell without overselling; the ceiling never refuses while stock remains.
func TestBaselines(t *testing.T) {
	_, rdb := testredis.Start(t)
	for _, target := range []loadgen.Target{loadgen.SeedStyle{RDB: rdb}, loadgen.Ceiling{RDB: rdb}} {
		t.Run(target.Name(), func(t *testing.T) {
			r := run(t, target, loadgen.Config{Scenario: loadgen.Hot, Buyers: 4000, Stock: 1000, Concurrency: 128})
			if r.Oversell != 0 || len(r.Errors) != 0 || r.Unaccounted != 0 {
				t.Fatalf("oversell %d, errors %v, unaccounted %d", r.Oversell, r.Errors, r.Unaccounted)
			}
			if r.Successes+r.Refusals["out_of_stock"]+r.Refusals["conflict"] != 4000 || r.Successes > 1000 {
				t.Fatalf("%+v", r)
			}
			if target.Name() == "ceiling-go" && (r.Successes != 1000 || r.FalseRefusals != 0) {
				t.Fatalf("ceiling sold %d with %d false refusals", r.Successes, r.FalseRefusals)
			}
			// Every seed-style give-up that left stock behind is counted as false.
			if target.Name() == "seed-style" && r.StockAfter > 0 && r.FalseRefusals < r.Refusals["conflict"] {
				t.Fatalf("stock remained (%d) yet only %d of %d give-ups counted false", r.StockAfter, r.FalseRefusals, r.Refusals["conflict"])
			}
		})
	}
}

// shelf is an in-memory target whose faults the tests choose, to show that the tool's
// checks catch what they claim to.
type shelf struct {
	mu       sync.Mutex
	n        map[string]int64
	oversell bool // sell even when empty
	liar     bool // refuse every third buyer though stock remains
	calls    int
}

func (*shelf) Name() string { return "shelf" }
func (s *shelf) Prepare(_ context.Context, stock map[string]int64) error {
	s.n = stock
	return nil
}
func (s *shelf) Levels(_ context.Context, skus []string) (map[string]engine.Level, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]engine.Level{}
	for _, sku := range skus {
		out[sku] = engine.Level{SKU: sku, Available: s.n[sku]}
	}
	return out, nil
}
func (s *shelf) Checkout(_ context.Context, _ int, key string, lines []engine.Line) loadgen.Answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	l := lines[0]
	if s.liar && s.calls%3 == 0 {
		return loadgen.Answer{Outcome: loadgen.Refused, Reason: "out_of_stock"}
	}
	if s.n[l.SKU] < l.Quantity && !s.oversell {
		return loadgen.Answer{Outcome: loadgen.Refused, Reason: "out_of_stock",
			Short: []engine.Shortage{{SKU: l.SKU, Requested: l.Quantity, Available: s.n[l.SKU]}}}
	}
	s.n[l.SKU] -= l.Quantity
	return loadgen.Answer{Outcome: loadgen.OK, ID: key}
}

func TestChecksCatchFaults(t *testing.T) {
	honest := run(t, &shelf{}, loadgen.Config{Scenario: loadgen.Hot, Buyers: 500, Stock: 300, Concurrency: 8})
	if honest.Oversell != 0 || honest.FalseRefusals != 0 || honest.Successes != 300 {
		t.Fatalf("honest shelf: %+v", honest)
	}
	over := run(t, &shelf{oversell: true}, loadgen.Config{Scenario: loadgen.Hot, Buyers: 500, Stock: 300, Concurrency: 8})
	if over.Oversell != 2*200 { // 200 units sold beyond the 300, and the shelf reads -200
		t.Fatalf("oversell measured %d, want 400", over.Oversell)
	}
	liar := run(t, &shelf{liar: true}, loadgen.Config{Scenario: loadgen.Hot, Buyers: 300, Stock: 300, Concurrency: 8})
	if liar.FalseRefusals != 100 || liar.Refusals["out_of_stock"] != 100 {
		t.Fatalf("liar refused %v, false refusals %d; want 100 of 100", liar.Refusals, liar.FalseRefusals)
	}
}

// With sold-out marks, requests without keys are refused in-process while the SKU is
// marked, and every cancellation must end the mark before it can hide a returned unit:
// many buyers and a canceller, checked for false refusals.
func TestStormWithSoldOutMarks(t *testing.T) {
	_, rdb := testredis.Start(t)
	inv := engine.NewRedis(rdb, engine.Options{SoldOutFor: time.Hour})
	t.Cleanup(inv.Close)
	r := run(t, loadgen.Engine{Inv: inv}, loadgen.Config{Scenario: loadgen.Storm, Duration: 700 * time.Millisecond, Concurrency: 64, NoKeys: true, CancelEvery: 2 * time.Millisecond})
	if r.Oversell != 0 || r.FalseRefusals != 0 || r.Unaccounted != 0 || len(r.Errors) != 0 {
		t.Fatalf("oversell %d, false refusals %d, unaccounted %d, errors %v", r.Oversell, r.FalseRefusals, r.Unaccounted, r.Errors)
	}
	if r.UnitsReturned == 0 || r.Successes <= r.StockBefore {
		t.Fatalf("returned units were not sold again: returned %d (%d cancels failed), sold %d of %d, %.2fs", r.UnitsReturned, r.CancelFailures, r.Successes, r.StockBefore, r.Seconds)
	}
}

// The open model starts attempts on a schedule: a run cannot end before its last
// scheduled start, however fast the target answers.
func TestOpenModelKeepsItsSchedule(t *testing.T) {
	const rate, buyers = 2000.0, 400
	r := run(t, &shelf{}, loadgen.Config{Scenario: loadgen.Hot, Rate: rate, Buyers: buyers, Concurrency: 16})
	if r.Attempts != buyers || r.Successes != buyers || r.Oversell != 0 {
		t.Fatalf("%+v", r)
	}
	if first := float64(buyers-1) / rate; r.Seconds < first {
		t.Fatalf("the run took %.3fs; its last attempt was due at %.3fs", r.Seconds, first)
	}
	if r.Model != "open 2000/s" {
		t.Fatalf("model %q", r.Model)
	}
}

// A run bounded by time alone stocks its SKU with as much as the engine allows: the
// engine refuses more, and the suite's timed engine and wrk runs must not fail on it.
func TestTimedRunFitsTheEnginesBounds(t *testing.T) {
	_, rdb := testredis.Start(t)
	inv := engine.NewRedis(rdb, engine.Options{})
	t.Cleanup(inv.Close)
	r := run(t, loadgen.Engine{Inv: inv}, loadgen.Config{Scenario: loadgen.Hot, Duration: 200 * time.Millisecond, Concurrency: 16})
	if r.StockBefore != engine.MaxUnits || r.Oversell != 0 || len(r.Errors) != 0 {
		t.Fatalf("stock before %d (want %d), oversell %d, errors %v", r.StockBefore, int64(engine.MaxUnits), r.Oversell, r.Errors)
	}
}
