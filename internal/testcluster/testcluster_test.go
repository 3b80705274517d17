package testcluster_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/internal/testcluster"
)

func TestMain(m *testing.M) { os.Exit(testcluster.Main(m)) }

func TestSharedServesWritesOnEveryMaster(t *testing.T) {
	c := testcluster.Shared(t)
	rdb := c.Client()
	for _, m := range c.Masters() {
		key := c.TagOn(m, t.Name()) + ":k"
		if err := rdb.Set(context.Background(), key, m, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		if got, err := rdb.Get(context.Background(), key).Result(); err != nil || got != m {
			t.Fatalf("GET %s: got %q, %v; want %q", key, got, err, m)
		}
	}
}

func TestSharedIsOneClusterAcrossTests(t *testing.T) {
	var addrs [2][]string
	var pids [2]int
	for i := range 2 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			c := testcluster.Shared(t)
			addrs[i], pids[i] = c.Addrs(), c.Pid(c.Addrs()[0])
		})
	}
	if !slices.Equal(addrs[0], addrs[1]) || pids[0] != pids[1] || pids[0] == 0 {
		t.Fatalf("got clusters %v (pid %d) and %v (pid %d), want one running cluster",
			addrs[0], pids[0], addrs[1], pids[1])
	}
}

func running(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return strings.Contains(string(stat), "(redis-server)") && !strings.HasPrefix(after, "Z")
}

func TestStartStopsItsClusterWhenTheTestEnds(t *testing.T) {
	var pids []int
	t.Run("owner", func(t *testing.T) {
		c := testcluster.Start(t, rediscluster.Options{})
		if got := len(c.Masters()) + len(c.Replicas()); got != 6 {
			t.Fatalf("got %d nodes, want 6", got)
		}
		for _, a := range c.Addrs() {
			pids = append(pids, c.Pid(a))
		}
	})
	if len(pids) != 6 {
		t.Fatalf("got %d pids, want 6", len(pids))
	}
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("pid %d still runs after its test ended", pid)
		}
	}
}
