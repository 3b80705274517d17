package suite

import (
	"fmt"
	"strings"

	"github.com/flashstock/flashstock/loadgen"
)

// addRatios sets the figures the targets are judged by side by side.
func addRatios(rep *loadgen.Report) {
	seed := rep.Find("seed-style", loadgen.Hot)
	for _, name := range []string{"engine", "http", "wrk", "bare"} {
		r := rep.Find(name, loadgen.Hot)
		if r == nil {
			continue
		}
		for _, c := range []string{"ceiling", "ceiling-pipelined", "ceiling-go"} {
			if ceiling := rep.Find(c, loadgen.Hot); ceiling != nil {
				rep.AddRatio(name+" hot checkouts/s ÷ "+c, r.SuccessesPerSecond, ceiling.SuccessesPerSecond)
			}
		}
		if seed != nil {
			rep.AddRatio(name+" hot checkouts/s ÷ seed-style", r.SuccessesPerSecond, seed.SuccessesPerSecond)
		}
	}
	addBaselineRatios(rep)
	if own, wrk := rep.Find("http", loadgen.Hot), rep.Find("wrk", loadgen.Hot); own != nil && wrk != nil {
		rep.AddRatio("own HTTP driver ÷ wrk (hot)", own.AttemptsPerSecond, wrk.AttemptsPerSecond)
	}
	// Sold-out refusals against checkouts, both from this driver: a storm's rate is
	// refusals over the time since the first one (the sellout takes milliseconds).
	for _, x := range rep.Results {
		if x.Scenario != loadgen.Storm {
			continue
		}
		if hot := rep.Find(strings.TrimSuffix(x.Target, " soldout-cache"), loadgen.Hot); hot != nil {
			name := x.Target + " storm"
			if strings.HasSuffix(x.Model, "no keys") {
				name += " (no keys)"
			}
			rep.AddRatio(name+" refusals/s ÷ "+hot.Target+" hot checkouts/s", x.RefusalsPerSecond, hot.SuccessesPerSecond)
			// The same ratio from CPU per attempt (all processes): the two runs above are
			// taken seconds apart on a host whose speed drifts; CPU cost drifts less.
			if c, h := x.DriverCPU+x.ServerCPU+x.RedisCPU, hot.DriverCPU+hot.ServerCPU+hot.RedisCPU; c > 0 && h > 0 {
				rep.AddRatio(name+", by CPU per attempt", h, c)
			}
		}
	}
}

// The names of the HTTP baselines' ratios in the report.
const (
	RatioRateToBare  = "wrk hot checkouts/s ÷ bare handler (target ≥ 1)"
	RatioP99ToBare   = "wrk hot p99 ÷ bare handler p99 (target ≤ 1)"
	RatioBareToHello = "bare handler checkouts/s ÷ fiber-hello"
	RatioRateToHello = "wrk hot checkouts/s ÷ fiber-hello"
)

// addBaselineRatios sets flashstock's wrk run beside the HTTP baselines' wrk runs: its
// rate and p99 as ratios to the bare handler's, and both rates as fractions of Fiber's
// hello world. It adds a note that says whether flashstock meets the bare handler (at
// least its rate, a p99 no worse).
func addBaselineRatios(rep *loadgen.Report) {
	fs, b, hello := rep.Find("wrk", loadgen.Hot), rep.Find("bare", loadgen.Hot), rep.Find("fiber-hello", loadgen.Hot)
	if fs != nil && b != nil && b.SuccessesPerSecond > 0 && b.Latency.P99 > 0 {
		rep.AddRatio(RatioRateToBare, fs.SuccessesPerSecond, b.SuccessesPerSecond)
		rep.AddRatio(RatioP99ToBare, fs.Latency.P99, b.Latency.P99)
		rate, p99 := fs.SuccessesPerSecond/b.SuccessesPerSecond, fs.Latency.P99/b.Latency.P99
		rep.Notes = append(rep.Notes, fmt.Sprintf(
			"flashstock against the bare handler (wrk, same run): %.2f× its checkouts/s (%.0f / %.0f; target ≥ 1.00: %s), p99 %.2f× (%.2f / %.2f ms; target ≤ 1.00: %s)",
			rate, fs.SuccessesPerSecond, b.SuccessesPerSecond, met(rate >= 1), p99, fs.Latency.P99, b.Latency.P99, met(p99 <= 1)))
	}
	if hello != nil {
		if b != nil {
			rep.AddRatio(RatioBareToHello, b.SuccessesPerSecond, hello.SuccessesPerSecond)
		}
		if fs != nil {
			rep.AddRatio(RatioRateToHello, fs.SuccessesPerSecond, hello.SuccessesPerSecond)
		}
	}
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}
