package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/rediscluster"
)

// freeBase finds 6 consecutive free ports whose bus ports (+10000) are free too, all
// below the ephemeral range (32768 up), so no outgoing connection takes one meanwhile.
func freeBase(t *testing.T) int {
	t.Helper()
	for range 100 {
		base := 20000 + rand.IntN(2700) // bus ports 30000-32705, below 32768
		ok := true
		for p := base; p < base+6 && ok; p++ {
			for _, q := range []int{p, p + 10000} {
				l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(q))
				if err != nil {
					ok = false
					break
				}
				l.Close()
			}
		}
		if ok {
			return base
		}
	}
	t.Fatal("no 6 consecutive free port pairs")
	return 0
}

func TestUpServesTheClusterItPrintsAndDownStopsIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cluster")
	t.Cleanup(func() { rediscluster.StopDir(dir) }) // if the test fails half-way
	base := freeBase(t)
	var out bytes.Buffer
	if err := run([]string{"up", "-dir", dir, "-port", strconv.Itoa(base)}, &out); err != nil {
		t.Fatal(err)
	}
	t.Logf("up printed:\n%s", out.String())
	var addrs []string
	for _, line := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "REDIS_CLUSTER_ADDRS="); ok {
			addrs = strings.Split(v, ",")
		}
	}
	if len(addrs) != 6 || addrs[0] != "127.0.0.1:"+strconv.Itoa(base) {
		t.Fatalf("REDIS_CLUSTER_ADDRS: got %v, want 6 addresses from port %d", addrs, base)
	}
	rdb := rediscluster.NewClient(addrs)
	defer rdb.Close()
	if err := rdb.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error {
		return c.Ping(ctx).Err()
	}); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"up", "-dir", dir, "-port", strconv.Itoa(base)}, &out); err == nil {
		t.Fatal("second up on the same dir: got nil, want an error")
	}

	pids := pidsIn(t, dir)
	if len(pids) != 6 {
		t.Fatalf("got %d pidfiles under %s, want 6", len(pids), dir)
	}
	if err := run([]string{"down", "-dir", dir}, &out); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "redis-server" && !zombie(pid) {
			t.Errorf("pid %d still runs after down", pid)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s after down: got %v, want it removed", dir, err)
	}
}

func pidsIn(t *testing.T, dir string) []int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "n*", "redis.pid"))
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// zombie: exited, waiting to be reaped by this test process's exec waiter.
func zombie(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return strings.HasPrefix(after, "Z")
}
