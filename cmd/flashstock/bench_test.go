package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/flashstock/flashstock/loadgen"
)

// The load tool against the real binary: every scenario over HTTP, measured against the
// invariants, with tokens minted from the secret and, separately, from the demo logins.
func TestBenchDrivesTheRunningBinary(t *testing.T) {
	bin, data := buildBinary(t)
	p := startBinary(t, bin, data)
	bench := func(args ...string) loadgen.Report {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"bench", "-target", "http", "-url", p.base, "-json", "-quiet"}, args...)...)
		cmd.Env = append(os.Environ(), "JWT_SECRET=")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("bench %v: %v\n%s", args, err, out)
		}
		var rep loadgen.Report
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("bench -json: %v\n%s", err, out)
		}
		return rep
	}
	rep := bench("-jwt-secret", strings.Repeat("e", 40), "-scenario", "hot,cart,holds,storm", "-buyers", "1200", "-concurrency", "32", "-users", "300")
	if len(rep.Results) != 4 {
		t.Fatalf("want 4 results, got %d", len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Attempts != 1200 || len(r.Errors) != 0 || r.Oversell != 0 || r.FalseRefusals != 0 || r.Unaccounted != 0 {
			t.Errorf("%s: attempts %d, errors %v %v, oversell %d, false refusals %d, unaccounted %d",
				r.Scenario, r.Attempts, r.Errors, r.ErrorSamples, r.Oversell, r.FalseRefusals, r.Unaccounted)
		}
		if r.Latency.P50 <= 0 || r.Latency.P99 < r.Latency.P50 || r.Latency.Max < r.Latency.P99 {
			t.Errorf("%s: latency %+v", r.Scenario, r.Latency)
		}
	}
	if hot := rep.Results[0]; hot.Successes != 1200 || hot.StockAfter != 0 {
		t.Errorf("hot: %d sold, %d left; want all 1200 sold", hot.Successes, hot.StockAfter)
	}
	if storm := rep.Results[3]; storm.Refusals["out_of_stock"] == 0 || storm.UnitsReturned == 0 {
		t.Errorf("storm: refusals %v, returned %d", storm.Refusals, storm.UnitsReturned)
	}
	// Without the secret, the demo admin and customers log in.
	rep = bench("-scenario", "hot", "-buyers", "300", "-concurrency", "16", "-users", "5")
	if r := rep.Results[0]; r.Successes != 300 || r.Oversell != 0 {
		t.Errorf("hot with demo logins: %+v", r)
	}
}

func TestBenchFlags(t *testing.T) {
	env := func(k string) string { return map[string]string{"PORT": "3123", "JWT_SECRET": "s"}[k] }
	f, err := parseBenchFlags([]string{"-duration", "5s"}, env, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if f.URL != "http://127.0.0.1:3123" || f.Secret != "s" || f.Buyers != 0 {
		t.Fatalf("defaults: %+v", f)
	}
	if _, err := parseBenchFlags([]string{"-buyers", "x"}, env, &strings.Builder{}); err == nil {
		t.Fatal("a bad flag must be refused")
	}
	if _, err := parseBenchFlags([]string{"extra"}, env, &strings.Builder{}); err == nil {
		t.Fatal("a stray argument must be refused")
	}
}
