// Package latency summarises latency samples the one way flashstock reports them: the
// flash-sale simulation's report and the load tool's both use it, so their figures mean
// the same thing.
package latency

import "slices"

// Summary is the 50th, 95th and 99th percentiles and the maximum, in milliseconds.
type Summary struct {
	P50, P95, P99, Max float64
}

// Of sorts samples (nanoseconds: time.Duration or int64) in place and summarises them.
// Percentiles are nearest-rank: the smallest sample with at least that fraction of the
// samples at or below it. No samples summarise to zeros.
func Of[T ~int64](samples []T) Summary {
	n := len(samples)
	if n == 0 {
		return Summary{}
	}
	slices.Sort(samples)
	at := func(q float64) float64 {
		rank := int(q*float64(n) + 0.999999999) // ceil(q·n), robust to q·n landing a hair above an integer
		return float64(samples[min(max(rank, 1), n)-1]) / 1e6
	}
	return Summary{P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: float64(samples[n-1]) / 1e6}
}
