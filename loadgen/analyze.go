package loadgen

import (
	"slices"
	"sort"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/latency"
)

// Result is one run's figures.
type Result struct {
	Target      string  `json:"target"`
	Scenario    string  `json:"scenario"`
	Model       string  `json:"model"`
	Buyers      int     `json:"buyers"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate,omitempty"`
	Seconds     float64 `json:"seconds"`

	Attempts  int64            `json:"attempts"`
	Successes int64            `json:"successes"`
	Refusals  map[string]int64 `json:"refusals"`
	Errors    map[string]int64 `json:"errors"`
	// ErrorSamples holds one cause per error class.
	ErrorSamples map[string]string `json:"errorSamples,omitempty"`

	AttemptsPerSecond  float64 `json:"attemptsPerSecond"`
	SuccessesPerSecond float64 `json:"successesPerSecond"`
	// RefusalsPerSecond is refusals over the time from the first refusal to the end.
	RefusalsPerSecond float64 `json:"refusalsPerSecond,omitempty"`
	Latency           Latency `json:"latencyMs"`

	// Stock accounting, in units, summed over the scenario's SKUs.
	StockBefore    int64 `json:"stockBefore"`
	StockAfter     int64 `json:"stockAfter"`
	ReservedAfter  int64 `json:"reservedAfter"`
	UnitsSold      int64 `json:"unitsSold"`
	UnitsReturned  int64 `json:"unitsReturned"`
	CancelFailures int64 `json:"cancelFailures,omitempty"`
	// Oversell: units sold beyond what existed, or stock measured below zero.
	Oversell int64 `json:"oversell"`
	// Unaccounted: units that left the shelf without a sale the buyer was told of
	// (from failed attempts, or lost). 0 when there were no errors.
	Unaccounted int64 `json:"unaccounted"`
	// FalseRefusals: stock refusals while stock remained (see Result.check).
	FalseRefusals int64 `json:"falseRefusals"`

	// CPU per attempt, in microseconds, where the suite measured it: the load driver
	// (for engine runs, the driver and the engine), the flashstock server, and Redis.
	DriverCPU float64 `json:"driverCpuMicrosPerAttempt,omitempty"`
	ServerCPU float64 `json:"serverCpuMicrosPerAttempt,omitempty"`
	RedisCPU  float64 `json:"redisCpuMicrosPerAttempt,omitempty"`

	// Queue holds the queue scenario's joins and polls (its attempts are the checkouts
	// of admitted buyers).
	Queue *QueueFigures `json:"queue,omitempty"`

	// Nodes holds the per-node figures of the cluster target's runs.
	Nodes *NodesFigures `json:"perNode,omitempty"`
}

// SetCPU records CPU used during the run, spread over its attempts.
func (r *Result) SetCPU(driver, server, redis time.Duration) {
	if r.Attempts == 0 {
		return
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(r.Attempts) }
	r.DriverCPU, r.ServerCPU, r.RedisCPU = per(driver), per(server), per(redis)
}

// Latency percentiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func summarize(target string, cfg Config, p plan, workers []worker, elapsed time.Duration) *Result {
	r := &Result{
		Target: target, Scenario: cfg.Scenario, Model: cfg.Model(), Buyers: cfg.Buyers,
		Concurrency: cfg.Concurrency, Rate: cfg.Rate, Seconds: elapsed.Seconds(),
		Refusals: map[string]int64{}, Errors: map[string]int64{}, ErrorSamples: map[string]string{},
	}
	var lat []int64
	firstRefusal := int64(-1)
	for _, w := range workers {
		for _, a := range w.attempts {
			r.Attempts++
			lat = append(lat, a.end-a.start)
			switch a.outcome {
			case OK:
				r.Successes++
				for _, l := range p.linesFor(int(a.n)) {
					r.UnitsSold += l.Quantity
				}
			case Refused:
				r.Refusals[a.reason]++
				if firstRefusal < 0 || a.start < firstRefusal {
					firstRefusal = a.start
				}
			case Failed:
				r.Errors[a.reason]++
			}
		}
		for class, err := range w.failures {
			if err != nil {
				r.ErrorSamples[class] = err.Error()
			}
		}
	}
	if s := elapsed.Seconds(); s > 0 {
		r.AttemptsPerSecond = float64(r.Attempts) / s
		r.SuccessesPerSecond = float64(r.Successes) / s
		if refused := r.Refused(); refused > 0 && firstRefusal >= 0 {
			if window := elapsed.Seconds() - time.Duration(firstRefusal).Seconds(); window > 0 {
				r.RefusalsPerSecond = float64(refused) / window
			}
		}
	}
	r.Latency = percentiles(lat)
	return r
}

// Refused is the number of refused attempts, whatever the reason.
func (r *Result) Refused() int64 { return sum(r.Refusals) }

// Failed is the number of attempts that got no answer within the contract.
func (r *Result) Failed() int64 { return sum(r.Errors) }

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func percentiles(ns []int64) Latency {
	l := latency.Of(ns)
	return Latency{P50: l.P50, P95: l.P95, P99: l.P99, Max: l.Max}
}

// allServable says whether an out_of_stock answer's own figures show enough stock for
// every line it lists: a refusal that contradicts itself.
func allServable(a Answer) bool {
	if len(a.Short) == 0 {
		return false
	}
	for _, s := range a.Short {
		if s.Available < s.Requested {
			return false
		}
	}
	return true
}

// check measures the invariants from the stock levels read before and after the run and
// from what buyers were told.
//
// Oversell is what was sold beyond the stock that existed (initial stock plus units
// returned by cancellations), plus any level measured below zero.
//
// A stock refusal (out_of_stock, or the baseline giving up) is false when stock
// provably remained at the instant it was decided. Three tests, each sufficient:
//   - the answer's own figures show enough stock for every line;
//   - for a single-line scenario: a sale of the same SKU began after the refusal had
//     ended, and no cancellation overlapped the span between them, so stock never rose
//     in between and the refusal saw at least the unit that sale took;
//   - no unit of the refused lines' SKUs was ever returned, and after the run each of
//     them still has the units the refusal asked for: stock only falls, so it had them.
func (r *Result) check(p plan, workers []worker, returns []ret, before, after map[string]engine.Level) {
	returnedBySKU := map[string]int64{}
	for _, rt := range returns {
		r.UnitsReturned += rt.qty
		returnedBySKU[p.skus[rt.sku]] += rt.qty
	}
	var taken int64
	for _, sku := range p.skus {
		b, a := before[sku], after[sku]
		r.StockBefore += b.Available
		r.StockAfter += a.Available
		r.ReservedAfter += a.Reserved
		r.Oversell += max(0, -a.Available) + max(0, -a.Reserved)
		taken += (b.Available + b.Reserved) - (a.Available + a.Reserved)
	}
	r.Oversell += max(0, r.UnitsSold-r.StockBefore-r.UnitsReturned)
	r.Unaccounted = taken - (r.UnitsSold - r.UnitsReturned)

	// Successes and returns in time order, for the second test.
	single := !p.cart
	var sales []attempt
	var refusals []attempt
	for _, w := range workers {
		for _, a := range w.attempts {
			switch {
			case a.outcome == OK:
				sales = append(sales, a)
			case a.outcome == Refused && stockReasons[a.reason]:
				refusals = append(refusals, a)
			}
		}
	}
	sort.Slice(sales, func(i, j int) bool { return sales[i].start < sales[j].start })
	// minEnd[i]: the earliest end among sales that start at or after sales[i].start.
	minEnd := make([]int64, len(sales)+1)
	minEnd[len(sales)] = 1<<63 - 1
	for i := len(sales) - 1; i >= 0; i-- {
		minEnd[i] = min(minEnd[i+1], sales[i].end)
	}
	rets := slices.Clone(returns)
	sort.Slice(rets, func(i, j int) bool { return rets[i].start < rets[j].start })
	// maxEnd[i]: the latest end among the first i returns (by start).
	maxEnd := make([]int64, len(rets)+1)
	maxEnd[0] = -1
	for i, rt := range rets {
		maxEnd[i+1] = max(maxEnd[i], rt.end)
	}
	for _, a := range refusals {
		if a.liar {
			r.FalseRefusals++
			continue
		}
		if single {
			i := sort.Search(len(sales), func(i int) bool { return sales[i].start > a.end })
			if end := minEnd[i]; i < len(sales) {
				// Any return that started before that sale ended and ended after the
				// refusal began could have been the unit that sale took.
				n := sort.Search(len(rets), func(i int) bool { return rets[i].start > end })
				if maxEnd[n] < a.start {
					r.FalseRefusals++
					continue
				}
			}
		}
		remained := true
		for _, l := range p.linesFor(int(a.n)) {
			if returnedBySKU[l.SKU] > 0 || after[l.SKU].Available < l.Quantity {
				remained = false
				break
			}
		}
		if remained {
			r.FalseRefusals++
		}
	}
}
