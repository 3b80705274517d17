package rediscluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
)

// StateReloadInterval is the cluster client's periodic slot-map refresh in NewClient.
// It is a backstop only: the reload that matters after a failover is the one
// ReloadOnDialError triggers.
const StateReloadInterval = 5 * time.Second

// Client returns a new cluster client to c, built by NewClient. The caller closes it.
func (c *Cluster) Client() *redis.ClusterClient {
	return NewClientWith(c.Addrs(), ClientOptions{Password: c.opts.Password, TLS: c.tls})
}

// ClientOptions are how a cluster client reaches the nodes: its credentials, an ACL
// user (Username, optional) and its password, or the nodes' requirepass (Password
// alone); and TLS, if the nodes speak it.
type ClientOptions struct {
	Username, Password string
	TLS                *tls.Config
}

// NewClient returns a cluster client for flashstock: it never sends a command twice on
// its own (engine.NoRetriesCluster) and it notices a failover promptly.
//
// Why the reload: go-redis refreshes its slot map only on MOVED/ASK/READONLY replies
// and every ClusterStateReloadInterval (default 60 s). A killed master answers
// nothing, so the client keeps dialing it, failing every command for its slots, until
// the periodic reload: about a minute after the kill although the replica took over
// after a few seconds (cluster.md §3.4, go-redis issue #3979). So every node client
// gets a dial hook that asks for a reload (ReloadOnDialError): go-redis coalesces
// those (one at a time, 200 ms apart) and each reads CLUSTER SLOTS from a live node,
// so the first failing command after the promotion brings the new map (the research
// measured first success within 0.25 s of the promotion this way). A short interval
// alone lags the promotion by up to the interval and costs every client a CLUSTER
// SLOTS per interval forever; the interval here, StateReloadInterval, is only a
// backstop for changes that produce no error at all.
//
// Caution for scripts that are not idempotent: MaxRetries -1 does not make a
// ClusterClient send a command at most once. Its redirect loop (up to MaxRedirects,
// default 3) re-sends a command whose reply was lost (EOF, read timeout), and the
// script runs again (TestClusterClientResendsALostReplyUnlessRedirectsAreOff).
// MaxRedirects -1 stops that but also stops following MOVED/ASK. So this client keeps
// go-redis's default for commands that may be sent twice (reads), and scripts go
// through internal/clusterscript's Client (clusterscript.New(rdb, ...)), which sends
// them through the node clients and follows MOVED/ASK itself, re-sending only after a
// node refused (deploy/CLUSTER.md, "At-most-once scripts on a cluster").
func NewClient(addrs []string) *redis.ClusterClient { return NewClientWith(addrs, ClientOptions{}) }

// NewClientWith is NewClient with credentials, which every node client it makes uses
// (the engine's scripts go through those).
func NewClientWith(addrs []string, o ClientOptions) *redis.ClusterClient {
	rdb := redis.NewClusterClient(engine.NoRetriesCluster(&redis.ClusterOptions{
		Addrs:                      addrs,
		Username:                   o.Username,
		Password:                   o.Password,
		TLSConfig:                  o.TLS,
		ClusterStateReloadInterval: StateReloadInterval,
	}))
	ReloadOnDialError(rdb)
	return rdb
}

// ReloadOnDialError makes rdb reload its slot map whenever a connection to a node
// cannot be opened. Call it before rdb's first command: only node clients created
// afterwards get the hook.
func ReloadOnDialError(rdb *redis.ClusterClient) {
	rdb.OnNewNode(func(node *redis.Client) { node.AddHook(reloadOnDialError{rdb}) })
}

type reloadOnDialError struct{ rdb *redis.ClusterClient }

func (h reloadOnDialError) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil {
			h.rdb.ReloadState(ctx) // asynchronous and coalesced: never blocks the dial
		}
		return conn, err
	}
}

func (reloadOnDialError) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (reloadOnDialError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TagOn returns a hash tag "{prefix-N}" whose slot the master at addr serves now, so a
// test can put keys on a chosen master ("{prefix-N}:stock"). It asks the running
// nodes, so call it after the cluster is healthy.
func (c *Cluster) TagOn(addr, prefix string) (string, error) {
	up := c.running()
	if len(up) == 0 {
		return "", fmt.Errorf("rediscluster: no running node")
	}
	cl := up[0].client()
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shards, err := cl.ClusterShards(ctx).Result()
	if err != nil {
		return "", fmt.Errorf("rediscluster: CLUSTER SHARDS on %s: %w", up[0].addr, err)
	}
	var mine []redis.SlotRange
	for _, s := range shards {
		for _, n := range s.Nodes {
			if n.Role == "master" && n.IP+":"+strconv.FormatInt(n.Port, 10) == addr {
				mine = append(mine, s.Slots...)
			}
		}
	}
	if len(mine) == 0 {
		return "", fmt.Errorf("rediscluster: %s serves no slots", addr)
	}
	for i := range 10000 {
		tag := "{" + prefix + "-" + strconv.Itoa(i) + "}"
		slot, err := cl.ClusterKeySlot(ctx, tag).Result()
		if err != nil {
			return "", fmt.Errorf("rediscluster: CLUSTER KEYSLOT: %w", err)
		}
		if slices.ContainsFunc(mine, func(s redis.SlotRange) bool {
			return s.Start <= slot && slot <= s.End
		}) {
			return tag, nil
		}
	}
	return "", fmt.Errorf("rediscluster: no tag with prefix %q on %s", prefix, addr)
}
