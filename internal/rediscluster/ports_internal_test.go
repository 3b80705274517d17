package rediscluster

import (
	"net"
	"os/exec"
	"testing"
)

// Internal: the retry is only reachable when a picked port is lost between the pick
// and the bind, which the exported API cannot arrange on purpose.
func TestStartAllMovesANodeOffATakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{dir: t.TempDir(), bin: bin, args: []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}}
	n, err := c.newNode(taken)
	if err != nil {
		t.Fatal(err)
	}
	c.nodes = []*node{n}
	err = c.startAll()
	defer c.Stop()
	if err != nil {
		t.Fatalf("startAll with port %d taken: %v", taken, err)
	}
	if got := c.nodes[0].port; got == taken || !c.nodes[0].running() {
		t.Fatalf("node on port %d (running %v), want it moved off taken port %d and running", got, c.nodes[0].running(), taken)
	}
}
