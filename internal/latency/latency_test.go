package latency_test

import (
	"testing"
	"time"

	"github.com/flashstock/flashstock/internal/latency"
)

func TestNearestRank(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		out := make([]time.Duration, len(vs))
		for i, v := range vs {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[99-i] = time.Duration(i+1) * time.Millisecond // 100 ms … 1 ms, unsorted
	}
	for _, tc := range []struct {
		name string
		in   []time.Duration
		want latency.Summary
	}{
		{"none", nil, latency.Summary{}},
		{"one", ms(7), latency.Summary{P50: 7, P95: 7, P99: 7, Max: 7}},
		{"1..100", hundred, latency.Summary{P50: 50, P95: 95, P99: 99, Max: 100}},
		{"four", ms(4, 1, 3, 2), latency.Summary{P50: 2, P95: 4, P99: 4, Max: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := latency.Of(tc.in); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if got := latency.Of([]int64{3e6, 1e6, 2e6}); got.P50 != 2 || got.Max != 3 {
		t.Fatalf("nanoseconds as int64: got %+v", got)
	}
}
