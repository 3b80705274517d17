package loadgen

import (
	"math"
	"testing"
)

// wrk 4.1.0 --latency output, as the suite reads it.
const wrkOutput = `Running 8s test @ http://127.0.0.1:3111
  2 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    22.59ms   11.25ms   1.30s    75.15%
    Req/Sec     5.66k     1.38k   11.52k    71.70%
  Latency Distribution
     50%  820.00us
     75%   28.13ms
     90%   36.13ms
     99%   57.85ms
  90211 requests in 8.08s, 30.96MB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 11
Requests/sec:  11157.88
Transfer/sec:      3.83MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk([]byte(wrkOutput))
	if err != nil {
		t.Fatal(err)
	}
	if r.Attempts != 90211 || r.Successes != 90200 || r.Errors["non-2xx"] != 11 || r.Errors["timeout"] != 5 || r.Errors["read"] != 2 {
		t.Fatalf("counts: %+v", r)
	}
	if math.Abs(r.Latency.P50-0.82) > 1e-9 || r.Latency.P99 != 57.85 || r.Latency.Max != 1300 || r.Seconds != 8.08 {
		t.Fatalf("latency %+v, seconds %v", r.Latency, r.Seconds)
	}
	if _, err := parseWrk([]byte("unable to connect to 127.0.0.1:1 Connection refused")); err == nil {
		t.Fatal("an error message must not parse as a result")
	}
}

func TestParseRedisBenchmark(t *testing.T) {
	out := `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"evalsha b698 1 k 1","45365.19","3.135","1.088","2.799","4.591","6.111","19.951"
`
	r, err := parseRedisBenchmark([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if r.AttemptsPerSecond != 45365.19 || r.Latency.P50 != 2.799 || r.Latency.P95 != 4.591 || r.Latency.P99 != 6.111 || r.Latency.Max != 19.951 {
		t.Fatalf("%+v", r)
	}
	if _, err := parseRedisBenchmark([]byte("Could not connect to Redis")); err == nil {
		t.Fatal("an error message must not parse as a result")
	}
}
