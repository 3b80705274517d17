package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashstock/flashstock/internal/redisserver"
	"github.com/flashstock/flashstock/internal/testredis"
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
	// A drop through the waiting room: 1,000 buyers join, 100 units sell, the rest are
	// told sold out.
	rep = bench("-jwt-secret", strings.Repeat("e", 40), "-scenario", "queue", "-buyers", "1000", "-concurrency", "32")
	if r := rep.Results[0]; r.Queue == nil || r.Attempts != 100 || r.Successes != 100 || r.StockAfter != 0 || len(r.Errors) != 0 ||
		r.Oversell != 0 || r.FalseRefusals != 0 || r.Queue.Joins != 1000 || r.Queue.SoldOut != 900 || r.Queue.Failures != 0 {
		t.Errorf("queue: %+v %+v", r, r.Queue)
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
	if f, err := parseBenchFlags([]string{"-webhooks"}, env, os.Stderr); err != nil || !f.webhooks || f.Buyers != 5000 || f.Rounds != 3 {
		t.Fatalf("-webhooks: %+v, %v; want 5000 buyers and 3 rounds by default", f, err)
	}
	if f, err := parseBenchFlags([]string{"-webhooks", "-buyers", "200", "-rounds", "1"}, env, os.Stderr); err != nil || f.Buyers != 200 || f.Rounds != 1 {
		t.Fatalf("-webhooks with -buyers and -rounds: %+v, %v", f, err)
	}
	if _, err := parseBenchFlags([]string{"-webhooks", "-suite"}, env, &strings.Builder{}); err == nil {
		t.Fatal("-webhooks with -suite must be refused")
	}
	if _, err := parseBenchFlags([]string{"-webhooks", "-worker-nice", "20"}, env, &strings.Builder{}); err == nil {
		t.Fatal("-worker-nice 20 must be refused")
	}
}

// The suite's baseline servers, as it starts them: this binary, `bench -serve-baseline`,
// on PORT, stopped by SIGINT with exit status 0. The bare handler is driven by the load
// tool and keeps its invariants; hello answers every request.
func TestBenchServesTheBaselines(t *testing.T) {
	bin, _ := buildBinary(t)
	srv, _ := testredis.Start(t)
	secret := strings.Repeat("b", 40)
	base := mustServeBaseline(t, bin, "bare", "REDIS_URL=redis://"+srv.Addr, "JWT_SECRET="+secret)
	cmd := exec.Command(bin, "bench", "-target", "http", "-url", base, "-jwt-secret", secret, "-scenario", "hot", "-buyers", "600", "-concurrency", "16", "-json", "-quiet")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench against the bare handler: %v\n%s", err, out)
	}
	var rep loadgen.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("bench -json: %v\n%s", err, out)
	}
	if r := rep.Results[0]; r.Successes != 600 || r.StockAfter != 0 || r.Oversell != 0 || r.FalseRefusals != 0 || len(r.Errors) != 0 {
		t.Fatalf("bare handler: sold %d, left %d, oversell %d, false refusals %d, errors %v; want 600 sold, none left", r.Successes, r.StockAfter, r.Oversell, r.FalseRefusals, r.Errors)
	}

	base = mustServeBaseline(t, bin, "hello")
	res, err := http.Post(base+"/api/v1/checkout", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "Hello, World!" {
		t.Fatalf("hello: got %d %q, want 200 Hello, World!", res.StatusCode, b)
	}

	if out, err := exec.Command(bin, "bench", "-serve-baseline", "nope").CombinedOutput(); err == nil {
		t.Fatalf("an unknown baseline was served: %s", out)
	}
}

// mustServeBaseline starts `bench -serve-baseline baseline` on a free port with env,
// waits until it answers /readyz, and at the end of the test stops it with SIGINT and
// checks that it exited cleanly.
func mustServeBaseline(t *testing.T, bin, baseline string, env ...string) string {
	t.Helper()
	port, err := redisserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "bench", "-serve-baseline", baseline)
	cmd.Env = append(append(os.Environ(), "PORT="+strconv.Itoa(port)), env...)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("%s baseline: exit %v after SIGINT\n%s", baseline, err, &logs)
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("%s baseline: still running 20 s after SIGINT", baseline)
		}
	})
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	for deadline := time.Now().Add(20 * time.Second); ; {
		if res, err := http.Get(base + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return base
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("%s baseline exited before it was ready: %v\n%s", baseline, err, &logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s baseline not ready after 20 s\n%s", baseline, &logs)
		}
	}
}

// bench -webhooks end to end, small, in both layouts (one ROLE=all process; the API and
// a niced worker): every server it starts runs webhooks on an embedded FerretDB, every
// endpoint count is measured, and each storm's order confirmations all reach every
// endpoint (the run waits for them) with latencies that make sense.
func TestBenchWebhooks(t *testing.T) {
	bin, _ := buildBinary(t)
	for _, nice := range []string{"0", "10"} {
		t.Run("worker-nice="+nice, func(t *testing.T) { benchWebhooks(t, bin, nice) })
	}
}

func benchWebhooks(t *testing.T, bin, nice string) {
	cmd := exec.Command(bin, "bench", "-webhooks", "-rounds", "1", "-wrk-duration", "2s", "-buyers", "400",
		"-stock", "60", "-concurrency", "32", "-users", "100", "-worker-nice", nice, "-json", "-quiet")
	cmd.Env = append(os.Environ(), "JWT_SECRET=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench -webhooks: %v\n%s", err, out)
	}
	var rep loadgen.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("bench -json: %v\n%s", err, out)
	}
	targets := map[string]int{}
	for _, r := range rep.Results {
		targets[r.Target+" "+r.Scenario]++
		if len(r.Errors) != 0 || r.Oversell != 0 || r.FalseRefusals != 0 || r.Unaccounted != 0 {
			t.Errorf("%s %s: errors %v, oversell %d, false refusals %d, unaccounted %d",
				r.Target, r.Scenario, r.Errors, r.Oversell, r.FalseRefusals, r.Unaccounted)
		}
	}
	for _, want := range []string{"http webhooks=0 hot", "http webhooks=1 hot", "http webhooks=10 hot",
		"http webhooks=1 storm", "http webhooks=10 storm"} {
		if targets[want] != 1 {
			t.Errorf("%s: %d results, want 1 (got %v)", want, targets[want], targets)
		}
	}
	storms := 0
	for _, n := range rep.Notes {
		var eps, events, orders int
		var p50, p99 float64
		if _, err := fmt.Sscanf(n, "storm with %d endpoint(s): %d events delivered (%d orders), commit to receipt p50 %f ms, p99 %f ms,",
			&eps, &events, &orders, &p50, &p99); err != nil {
			continue
		}
		storms++
		if orders == 0 || events < eps*orders || p50 <= 0 || p99 < p50 {
			t.Errorf("storm note %q: want every endpoint to get at least one event per order, 0 < p50 <= p99", n)
		}
	}
	if storms != 2 {
		t.Errorf("storm notes: got %d, want 2 in %q", storms, rep.Notes)
	}
}
