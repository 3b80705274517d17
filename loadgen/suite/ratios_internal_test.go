package suite

import (
	"math"
	"strings"
	"testing"

	"github.com/flashstock/flashstock/loadgen"
)

func wrkRow(target string, perSecond, p99 float64) *loadgen.Result {
	return &loadgen.Result{Target: target, Scenario: loadgen.Hot, SuccessesPerSecond: perSecond, Latency: loadgen.Latency{P99: p99}}
}

func ratio(rep *loadgen.Report, name string) (float64, bool) {
	for _, r := range rep.Ratios {
		if r.Name == name {
			return r.Value, true
		}
	}
	return 0, false
}

// flashstock's wrk figures against the bare handler's and Fiber's hello world's: the
// ratios, and the note that says whether the target is met.
func TestBaselineRatios(t *testing.T) {
	for _, tc := range []struct {
		name              string
		rate, p99         float64 // flashstock's wrk run; the bare handler did 17,500/s at 32 ms
		wantRate, wantP99 float64
		rateMet, p99Met   string
	}{
		{"behind (the one-off reference run)", 14_000, 36, 0.8, 1.125, "target ≥ 1.00: not met", "target ≤ 1.00: not met"},
		{"ahead", 21_000, 28, 1.2, 0.875, "target ≥ 1.00: met", "target ≤ 1.00: met"},
		{"even", 17_500, 32, 1, 1, "target ≥ 1.00: met", "target ≤ 1.00: met"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := &loadgen.Report{Results: []*loadgen.Result{
				wrkRow("wrk", tc.rate, tc.p99), wrkRow("bare", 17_500, 32), wrkRow("fiber-hello", 70_000, 9),
			}}
			addRatios(rep)
			for _, want := range []struct {
				name  string
				value float64
			}{
				{RatioRateToBare, tc.wantRate},
				{RatioP99ToBare, tc.wantP99},
				{RatioBareToHello, 0.25},
				{RatioRateToHello, tc.rate / 70_000},
			} {
				got, ok := ratio(rep, want.name)
				if !ok || math.Abs(got-want.value) > 1e-9 {
					t.Errorf("%s: got %v (present %v), want %v", want.name, got, ok, want.value)
				}
			}
			if len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], tc.rateMet) || !strings.Contains(rep.Notes[0], tc.p99Met) {
				t.Errorf("notes %q, want one with %q and %q", rep.Notes, tc.rateMet, tc.p99Met)
			}
		})
	}
}

// Without a bare handler's run (an ad-hoc `flashstock bench -target wrk`), there is
// nothing to compare with: no baseline ratio, no note.
func TestBaselineRatiosNeedTheBaseline(t *testing.T) {
	rep := &loadgen.Report{Results: []*loadgen.Result{wrkRow("wrk", 14_000, 36)}}
	addRatios(rep)
	for _, name := range []string{RatioRateToBare, RatioP99ToBare, RatioBareToHello, RatioRateToHello} {
		if v, ok := ratio(rep, name); ok {
			t.Errorf("%s = %v without its baseline", name, v)
		}
	}
	if len(rep.Notes) != 0 {
		t.Errorf("notes %q without a baseline", rep.Notes)
	}
}
