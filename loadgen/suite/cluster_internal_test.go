package suite

import (
	"math"
	"strings"
	"testing"

	"github.com/flashstock/flashstock/loadgen"
)

func TestParseStats(t *testing.T) {
	info := "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:2.500000\r\nused_cpu_sys_children:9.0\r\n\r\n" +
		"# Commandstats\r\ncmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_eval:calls=2,usec=9,usec_per_call=4.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha_ro:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_wait:calls=7,usec=1,usec_per_call=0.14,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_get:calls=100,usec=1,usec_per_call=0.01,rejected_calls=0,failed_calls=0\r\n"
	s := parseStats(info)
	if s.scripts != 15 || s.waits != 7 || s.cpu != 3.75 {
		t.Fatalf("parseStats: %+v, want 15 scripts, 7 waits, 3.75 CPU s", s)
	}
}

// The ratios compare medians over the rounds, and the note says which target is met.
func TestAddClusterRatiosUsesMedians(t *testing.T) {
	rep := &loadgen.Report{}
	add := func(target, scenario string, rates ...float64) {
		for _, r := range rates {
			rep.Results = append(rep.Results, &loadgen.Result{Target: target, Scenario: scenario, SuccessesPerSecond: r})
		}
	}
	add(TargetSingleNode, SinglePartition, 100, 10, 1000)   // median 100
	add(TargetCluster, SinglePartition, 85, 5, 90)          // median 85
	add(TargetCluster, CrossPartition, 20, 40)              // median 30
	add(TargetClusterWait1, SinglePartition, 60, 80, 70, 1) // median 65
	add(TargetClusterWait1, CrossPartition, 13)
	addClusterRatios(rep)
	want := map[string]float64{RatioClusterToSingleNode: 0.85, RatioCrossToSingle: 30.0 / 85,
		RatioClusterWait1ToSingleNode: 0.65, RatioCrossToSingleWait1: 0.2}
	if len(rep.Ratios) != len(want) {
		t.Fatalf("ratios %+v", rep.Ratios)
	}
	for _, q := range rep.Ratios {
		if w, ok := want[q.Name]; !ok || math.Abs(q.Value-w) > 1e-9 {
			t.Errorf("%s = %v, want %v", q.Name, q.Value, w)
		}
	}
	if len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "0.85× single-node (target ≥ 0.80: met)") ||
		!strings.Contains(rep.Notes[0], "0.35× single-partition (target ≥ 0.35: met)") {
		t.Errorf("notes %q", rep.Notes)
	}
}
