package loadgen

import (
	"math"
	"os"
	"testing"
	"time"
)

// /proc and rusage agree that this process has used CPU, and both grow with work.
func TestCPUTime(t *testing.T) {
	procBefore, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	selfBefore, err := CPUTime(-1)
	if err != nil {
		t.Fatal(err)
	}
	x := 0.0
	for deadline := time.Now().Add(150 * time.Millisecond); time.Now().Before(deadline); {
		for i := range 1000 {
			x += math.Sqrt(float64(i))
		}
	}
	procAfter, _ := CPUTime(os.Getpid())
	selfAfter, _ := CPUTime(-1)
	if x == 0 || procAfter <= procBefore || selfAfter <= selfBefore {
		t.Fatalf("CPU did not grow: /proc %v → %v, rusage %v → %v", procBefore, procAfter, selfBefore, selfAfter)
	}
	// /proc counts in ticks of 10 ms; the two readings of one process stay close.
	if d := procAfter - selfAfter; d > 50*time.Millisecond || d < -50*time.Millisecond {
		t.Fatalf("/proc says %v, rusage %v", procAfter, selfAfter)
	}
	if _, err := CPUTime(1 << 30); err == nil {
		t.Fatal("a process that does not exist has no CPU time")
	}
}

func TestSlope(t *testing.T) {
	var flat, growing []MemorySample
	for i := range 6 {
		n := int64(i) * 100_000
		flat = append(flat, MemorySample{Requests: n, RSSBytes: 70 << 20})
		growing = append(growing, MemorySample{Requests: n, RSSBytes: float64(70<<20 + 3*n)})
	}
	if got := slope(flat); got != 0 {
		t.Errorf("flat memory: slope %v", got)
	}
	if got := slope(growing); math.Abs(got-3) > 1e-9 {
		t.Errorf("3 bytes per request: slope %v", got)
	}
	if got := slope(growing[:1]); got != 0 {
		t.Errorf("one sample: slope %v", got)
	}
}

func TestPercentiles(t *testing.T) {
	ns := make([]int64, 0, 100)
	for i := 100; i >= 1; i-- { // unsorted on purpose
		ns = append(ns, int64(i)*int64(time.Millisecond))
	}
	l := percentiles(ns)
	if l.P50 != 50 || l.P95 != 95 || l.P99 != 99 || l.Max != 100 {
		t.Fatalf("%+v", l)
	}
	if (percentiles(nil) != Latency{}) {
		t.Fatal("no samples, no latency")
	}
}
