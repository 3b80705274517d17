// Package suite runs flashstock's load tool as `flashstock bench` does: chosen
// scenarios on chosen targets (RunTargets), or the whole measured suite behind
// docs/BENCHMARKS.md (Run), and returns one report whose ratios compare figures taken
// in the same run. The command line only parses flags into Options and prints the
// report.
package suite

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/flashstock/flashstock/internal/rediscluster"
)

// Options are what `flashstock bench` was asked to do.
type Options struct {
	// Targets and Scenarios are comma-separated lists (RunTargets only).
	Targets, Scenarios string
	// URL is the server of the http and wrk targets; RedisURL the Redis of the engine
	// and the baselines (empty: a private redis-server for the run).
	URL, RedisURL string
	// ClusterAddrs, if set, is the Redis Cluster (comma-separated seeds) of the cluster
	// target, instead of a private local one; it is never flushed.
	ClusterAddrs string
	// ClusterAuth is how to reach ClusterAddrs: credentials and TLS (as serve's
	// REDIS_CLUSTER_PASSWORD, REDIS_CLUSTER_USERNAME, REDIS_CLUSTER_TLS and
	// REDIS_CLUSTER_CA_FILE).
	ClusterAuth rediscluster.ClientOptions
	// MongoURI is the MongoDB of RunWebhooks' servers (empty: an embedded FerretDB).
	MongoURI string
	// Rounds is how many times RunWebhooks measures each endpoint count.
	Rounds int
	// WorkerNice, if > 0, makes RunWebhooks run the API and a worker at that nice as
	// two processes (0: one ROLE=all process).
	WorkerNice int
	// Secret and Issuer mint buyer tokens (empty Secret: the demo accounts log in).
	Secret, Issuer string
	Buyers         int
	Concurrency    int
	Users          int
	Stock          int64
	Rate           float64
	Duration       time.Duration
	NoKeys         bool
	CancelEvery    time.Duration
	// AdmitPerMinute is the queue scenario's admission rate (0: its default).
	AdmitPerMinute int64
	// Suite only: the length of the HTTP hot-SKU runs, of the memory soak (0 skips it),
	// and the soak's rate.
	WrkDuration, Soak time.Duration
	SoakRate          float64
	// Progress, if not nil, gets progress bars (a terminal); Log gets the suite's notes.
	Progress, Log io.Writer
}

// UsageError is a request the tool cannot make sense of (an unknown target, a bad
// Redis URL): the command exits with status 2.
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// machine describes where the figures were taken.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, %s", cpu, runtime.NumCPU(), runtime.Version())
}
