package loadgen

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/flashstock/flashstock/engine"
)

// The scenarios.
const (
	// Hot: every buyer takes one unit of one SKU. Stock defaults to the number of
	// buyers, so the sale sells out exactly with the last buyer and every refusal is false.
	Hot = "hot"
	// Cart: carts of 2–4 distinct SKUs out of 8, 1–2 units each; stock runs short near
	// the end, so some carts are refused whole.
	Cart = "cart"
	// Holds: reserve one unit, then commit the hold (one attempt is both).
	Holds = "holds"
	// Storm: a small stock sells out at once, then the rest of the buyers hit the sold-out
	// SKU while a canceller returns sold units: every returned unit must be sold again,
	// and no refusal may come while a unit is on the shelf.
	Storm = "storm"
)

// Scenarios lists every scenario, in the order a suite runs them.
var Scenarios = []string{Hot, Cart, Holds, Storm}

// Config says what to run: one scenario against one target.
type Config struct {
	Scenario string
	// Buyers is how many attempts to make (closed model), or the cap in the open model.
	Buyers int
	// Concurrency is how many attempts may be in flight at once.
	Concurrency int
	// Rate, if > 0, selects the open model: attempts start at this many per second,
	// whether or not earlier ones have finished (up to Concurrency in flight), and
	// latency is measured from each attempt's scheduled start, so a stalled target
	// cannot hide its queue (no coordinated omission).
	Rate float64
	// Duration bounds the run: in the open model Buyers defaults to Rate × Duration; in
	// the closed model buyers stop coming when it is up (Buyers, if set, still caps them).
	Duration time.Duration
	// Stock is the units per SKU (0: the scenario's default).
	Stock int64
	// Users is how many distinct buyer identities take turns (0: one per buyer).
	Users int
	// CancelEvery is the storm's cancellation interval (default 5 ms).
	CancelEvery time.Duration
	// RunID makes SKU names and idempotency keys unique to this run (default: the time).
	RunID string
	// Seed makes the carts' random choices repeatable.
	Seed uint64
	// NoKeys sends requests without idempotency keys (by default each has its own).
	NoKeys bool
	// AdmitPerMinute is the queue scenario's admission rate (default 60,000).
	AdmitPerMinute int64

	// onStart, if set, is given the count of finished attempts when the run starts.
	onStart func(done func() int64)
}

func (c *Config) defaults() error {
	if !slices.Contains(Scenarios, c.Scenario) && c.Scenario != Queue {
		return fmt.Errorf("unknown scenario %q (want one of %v or %s)", c.Scenario, Scenarios, Queue)
	}
	if c.Scenario == Queue {
		// Every buyer is someone of its own: a room queues each user once.
		if c.Buyers <= 0 || c.Rate > 0 {
			return fmt.Errorf("the queue scenario needs a number of buyers and the closed model")
		}
		c.Users = c.Buyers
		if c.AdmitPerMinute <= 0 {
			c.AdmitPerMinute = 60_000
		}
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 256
	}
	if c.Rate > 0 && c.Buyers <= 0 {
		if c.Duration <= 0 {
			return fmt.Errorf("the open model needs a duration or a number of buyers")
		}
		c.Buyers = int(c.Rate * c.Duration.Seconds())
	}
	if c.Buyers <= 0 && c.Duration > 0 {
		c.Buyers = 1 << 30
	}
	if c.Buyers <= 0 {
		return fmt.Errorf("buyers must be positive")
	}
	if c.Users <= 0 || c.Users > c.Buyers {
		c.Users = min(c.Buyers, 1_000_000)
	}
	if c.Stock <= 0 {
		switch c.Scenario {
		case Hot, Holds:
			// A run bounded by time alone has no count of buyers: as much as a SKU
			// may hold.
			c.Stock = min(int64(c.Buyers), engine.MaxUnits)
		case Cart:
			c.Stock = int64(c.Buyers) / 2
		case Storm:
			c.Stock = min(100, int64(c.Buyers))
		case Queue:
			c.Stock = max(1, int64(c.Buyers)/10)
		}
	}
	if c.CancelEvery <= 0 {
		c.CancelEvery = 5 * time.Millisecond
	}
	if c.RunID == "" {
		c.RunID = strconv.FormatInt(time.Now().UnixNano()%1e12, 36)
	}
	return nil
}

// Model names the load model for the report.
func (c *Config) Model() string {
	m := fmt.Sprintf("closed c=%d", c.Concurrency)
	if c.Rate > 0 {
		m = fmt.Sprintf("open %.0f/s", c.Rate)
	}
	if c.NoKeys {
		m += ", no keys"
	}
	return m
}

// plan is a scenario made concrete: its SKUs and what each buyer asks for.
type plan struct {
	skus  []string
	stock map[string]int64
	one   []engine.Line // every buyer's lines, unless cart
	cart  bool
	seed  uint64
}

// linesFor is what attempt n asks for: the same for every call with the same n.
func (p *plan) linesFor(n int) []engine.Line {
	if !p.cart {
		return p.one
	}
	rng := rand.New(rand.NewPCG(p.seed, uint64(n)))
	count := 2 + rng.IntN(3)
	lines := make([]engine.Line, 0, count)
	for _, i := range rng.Perm(len(p.skus))[:count] {
		lines = append(lines, engine.Line{SKU: p.skus[i], Quantity: 1 + rng.Int64N(2)})
	}
	return lines
}

func newPlan(c Config) plan {
	sku := func(name string) string { return "B" + c.RunID + "-" + name }
	p := plan{stock: map[string]int64{}, seed: c.Seed}
	switch c.Scenario {
	case Cart:
		p.cart = true
		for i := range 8 {
			p.skus = append(p.skus, sku("C"+strconv.Itoa(i)))
		}
	default:
		p.skus = []string{sku(c.Scenario)}
		p.one = []engine.Line{{SKU: p.skus[0], Quantity: 1}}
	}
	for _, s := range p.skus {
		p.stock[s] = c.Stock
	}
	return p
}
