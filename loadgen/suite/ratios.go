package suite

import (
	"strings"

	"github.com/flashstock/flashstock/loadgen"
)

// addRatios sets the figures the targets are judged by side by side.
func addRatios(rep *loadgen.Report) {
	seed := rep.Find("seed-style", loadgen.Hot)
	for _, name := range []string{"engine", "http", "wrk"} {
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
