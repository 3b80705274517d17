package rediscluster

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

const slotCount = 16384

// create turns the started nodes into a cluster, as redis-cli --cluster create does:
// distinct config epochs, slot ranges on the first Masters nodes, MEET, then each
// other node REPLICATEs a master once every node knows every other.
func (c *Cluster) create(ctx context.Context) error {
	clients := make([]*redis.Client, len(c.nodes))
	for i, n := range c.nodes {
		clients[i] = n.client()
		defer clients[i].Close()
	}
	m := c.opts.Masters
	for i, cl := range clients {
		if err := cl.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER SET-CONFIG-EPOCH: %w", c.nodes[i].addr, err)
		}
	}
	for i := range m {
		lo, hi := i*slotCount/m, (i+1)*slotCount/m-1
		if err := clients[i].Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER ADDSLOTSRANGE %d %d: %w", c.nodes[i].addr, lo, hi, err)
		}
	}
	host, port := hostPort(c.nodes[0].addr)
	for i, cl := range clients[1:] {
		if err := cl.ClusterMeet(ctx, host, strconv.Itoa(port)).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER MEET: %w", c.nodes[i+1].addr, err)
		}
	}
	if err := poll(ctx, func() error { return c.allKnown(ctx, clients) }); err != nil {
		return fmt.Errorf("nodes did not meet: %w", err)
	}
	ids := make([]string, m)
	for i := range m {
		id, err := clients[i].ClusterMyID(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER MYID: %w", c.nodes[i].addr, err)
		}
		ids[i] = id
	}
	for i := m; i < len(clients); i++ {
		master := (i - m) % m
		err := poll(ctx, func() error { return clients[i].ClusterReplicate(ctx, ids[master]).Err() })
		if err != nil {
			return fmt.Errorf("%s: CLUSTER REPLICATE %s (%s): %w", c.nodes[i].addr, ids[master], c.nodes[master].addr, err)
		}
	}
	return nil
}

func (c *Cluster) allKnown(ctx context.Context, clients []*redis.Client) error {
	for i, cl := range clients {
		info, err := clusterInfo(ctx, cl)
		if err != nil {
			return fmt.Errorf("%s: %w", c.nodes[i].addr, err)
		}
		if got := info["cluster_known_nodes"]; got != strconv.Itoa(len(clients)) {
			return fmt.Errorf("%s: cluster_known_nodes %s, want %d", c.nodes[i].addr, got, len(clients))
		}
	}
	return nil
}

// poll calls f every 50 ms until it returns nil or ctx ends; then it returns f's last
// error.
func poll(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitHealthy waits up to timeout until the running nodes form a healthy cluster.
// cluster_state:ok alone is not enough (right after creation a node can still list
// replicas as slot-less masters), so every running node must, all at once:
//   - answer PING and report cluster_state:ok and cluster_known_nodes == all nodes;
//   - if a replica: have master_link_status:up to a running master;
//   - in CLUSTER NODES: list exactly Masters masters with slots, all running, covering
//     the 16384 slots, the same ones as every other node; every other running node
//     as a replica; no fail, fail?, handshake or noaddr flag on a running node; no
//     slots on a killed one.
//
// After Kill of a master this is "its replica was promoted and every survivor sees
// it". The error names the first unmet condition and carries the nodes' log tails.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	clients := map[string]*redis.Client{}
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	err := poll(ctx, func() error {
		up := c.running()
		for _, n := range up {
			if clients[n.addr] == nil {
				clients[n.addr] = n.client()
			}
		}
		return c.healthy(ctx, up, clients)
	})
	if err != nil {
		return fmt.Errorf("rediscluster: not healthy after %v: %w\n%s", timeout, err, c.logTails())
	}
	return nil
}

func (c *Cluster) healthy(ctx context.Context, up []*node, clients map[string]*redis.Client) error {
	running := map[string]bool{}
	for _, n := range up {
		running[n.addr] = true
	}
	wantReplicas := len(up) - c.opts.Masters
	var firstView string
	for _, n := range up {
		cl := clients[n.addr]
		if err := cl.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("%s: PING: %w", n.addr, err)
		}
		info, err := clusterInfo(ctx, cl)
		if err != nil {
			return fmt.Errorf("%s: %w", n.addr, err)
		}
		if s := info["cluster_state"]; s != "ok" {
			return fmt.Errorf("%s: cluster_state:%s", n.addr, s)
		}
		if k := info["cluster_known_nodes"]; k != strconv.Itoa(len(c.nodes)) {
			return fmt.Errorf("%s: cluster_known_nodes %s, want %d", n.addr, k, len(c.nodes))
		}
		if err := replicationUp(ctx, cl, running); err != nil {
			return fmt.Errorf("%s: %w", n.addr, err)
		}
		text, err := cl.ClusterNodes(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER NODES: %w", n.addr, err)
		}
		view, err := checkView(text, running, c.opts.Masters, wantReplicas)
		if err != nil {
			return fmt.Errorf("%s: CLUSTER NODES: %w", n.addr, err)
		}
		if firstView == "" {
			firstView = view
		} else if view != firstView {
			return fmt.Errorf("%s: sees masters %s, %s sees %s", n.addr, view, up[0].addr, firstView)
		}
	}
	return nil
}

func clusterInfo(ctx context.Context, cl *redis.Client) (map[string]string, error) {
	text, err := cl.ClusterInfo(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("CLUSTER INFO: %w", err)
	}
	return fields(text), nil
}

// fields parses "key:value" lines (CLUSTER INFO, INFO).
func fields(text string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// replicationUp checks that a replica's link to its master is up and that master is
// one of the running nodes; a master passes.
func replicationUp(ctx context.Context, cl *redis.Client, running map[string]bool) error {
	text, err := cl.Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("INFO replication: %w", err)
	}
	f := fields(text)
	if f["role"] == "master" {
		return nil
	}
	if s := f["master_link_status"]; s != "up" {
		return fmt.Errorf("replica with master_link_status:%s", s)
	}
	if m := f["master_host"] + ":" + f["master_port"]; !running[m] {
		return fmt.Errorf("replica of %s, which is not running", m)
	}
	return nil
}

// checkView checks one node's CLUSTER NODES and returns the sorted addresses of the
// masters holding slots, to compare views across nodes.
func checkView(text string, running map[string]bool, wantMasters, wantReplicas int) (string, error) {
	var masters []string
	replicas, slots := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return "", fmt.Errorf("malformed line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		flags := strings.Split(f[2], ",")
		isRunning := running[addr]
		owned, err := countSlots(f[8:])
		if err != nil {
			return "", fmt.Errorf("%s: %w", addr, err)
		}
		if isRunning {
			for _, bad := range []string{"fail", "fail?", "handshake", "noaddr"} {
				if slices.Contains(flags, bad) {
					return "", fmt.Errorf("running node %s flagged %s", addr, f[2])
				}
			}
		}
		switch {
		case slices.Contains(flags, "master") && owned > 0:
			if !isRunning {
				return "", fmt.Errorf("killed node %s still holds %d slots", addr, owned)
			}
			masters = append(masters, addr)
			slots += owned
		case isRunning && slices.Contains(flags, "slave"):
			replicas++
		case isRunning:
			return "", fmt.Errorf("running node %s is %s without slots", addr, f[2])
		}
	}
	if len(masters) != wantMasters || replicas != wantReplicas || slots != slotCount {
		return "", fmt.Errorf("%d masters with %d slots and %d replicas, want %d masters with %d slots and %d replicas",
			len(masters), slots, replicas, wantMasters, slotCount, wantReplicas)
	}
	slices.Sort(masters)
	return strings.Join(masters, ","), nil
}

// countSlots counts the slots in CLUSTER NODES slot fields ("0-5460", "5461");
// migrating and importing entries ("[5461->-id]") are not owned slots.
func countSlots(ranges []string) (int, error) {
	n := 0
	for _, r := range ranges {
		if strings.HasPrefix(r, "[") {
			continue
		}
		lo, hi, isRange := strings.Cut(r, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("slot field %q", r)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return 0, fmt.Errorf("slot field %q", r)
			}
		}
		n += b - a + 1
	}
	return n, nil
}
