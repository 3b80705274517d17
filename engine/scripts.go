package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/clusterscript"
)

// shebangs maps each script of the engine to its cluster variant: the same source behind
// a "#!lua" shebang (Redis 7), with which the server refuses a key not declared in KEYS
// and keys of two slots. miniredis (the embedded mode) cannot compile a shebang, so one
// Redis keeps the plain scripts.
var shebangs = map[*redis.Script]*redis.Script{}

// newScript makes one of the engine's scripts and its cluster variant. Package
// initialisation only.
func newScript(src string) *redis.Script {
	s := redis.NewScript(src)
	shebangs[s] = redis.NewScript("#!lua\n" + src)
	return s
}

// clusterRunner runs the cluster variant of each script through clusterscript.
type clusterRunner struct{ cs *clusterscript.Client }

func (c clusterRunner) Run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	return c.cs.Run(ctx, clusterVariant(script), keys, args...)
}

// clusterVariant is script's shebang variant (script itself if it has none).
func clusterVariant(script *redis.Script) *redis.Script {
	if v, ok := shebangs[script]; ok {
		return v
	}
	return script
}

// scriptRunner sends a script once: *clusterscript.Client on a cluster, nodeRunner on
// one Redis. Neither ever sends a script again after it may have run.
type scriptRunner interface {
	Run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd
}

// nodeRunner runs scripts on one Redis (or miniredis). With wait > 0 it pipelines WAIT
// behind each script on the same connection, as clusterscript does on a cluster.
type nodeRunner struct {
	rdb     redis.UniversalClient
	wait    int
	timeout time.Duration
}

func (n nodeRunner) Run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	if n.wait <= 0 {
		return script.Run(ctx, n.rdb, keys, args...)
	}
	cmd, w := n.pipelined(ctx, func(p redis.Pipeliner) *redis.Cmd { return script.EvalSha(ctx, p, keys, args...) })
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		cmd, w = n.pipelined(ctx, func(p redis.Pipeliner) *redis.Cmd { return script.Eval(ctx, p, keys, args...) })
	}
	if cmd.Err() != nil {
		return cmd
	}
	if err := w.Err(); err != nil {
		return failedCmd(ctx, fmt.Errorf("%w: WAIT: %w", clusterscript.ErrNotReplicated, err))
	}
	if got := w.Val(); got < int64(n.wait) {
		return failedCmd(ctx, fmt.Errorf("%w: %d of %d replicas within %v", clusterscript.ErrNotReplicated, got, n.wait, n.timeout))
	}
	return cmd
}

func (n nodeRunner) pipelined(ctx context.Context, send func(redis.Pipeliner) *redis.Cmd) (*redis.Cmd, *redis.IntCmd) {
	p := n.rdb.Pipeline()
	cmd := send(p)
	w := redis.NewIntCmd(ctx, "wait", n.wait, n.timeout.Milliseconds())
	_ = p.Process(ctx, w)
	_, _ = p.Exec(ctx)
	return cmd, w
}

// runBatch runs calls in one round trip (per master on a cluster), each at most once,
// and returns one Cmd per call. On a cluster each call carries its own error
// (clusterscript.RunBatch); on one Redis an error that is not a script's own means the
// pipeline's answers cannot be trusted and is returned instead.
func (r *Redis) runBatch(ctx context.Context, calls []clusterscript.Call) ([]*redis.Cmd, error) {
	if r.cs != nil {
		for i := range calls {
			calls[i].Script = clusterVariant(calls[i].Script)
		}
		return r.cs.RunBatch(ctx, calls), nil
	}
	// Make sure EVALSHA finds the scripts: a pipeline cannot fall back to EVAL.
	for _, c := range calls {
		if err := c.Script.Load(ctx, r.rdb).Err(); err != nil {
			return nil, err
		}
	}
	cmds := make([]*redis.Cmd, len(calls))
	var w *redis.IntCmd
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range calls {
			cmds[i] = c.Script.EvalSha(ctx, p, c.Keys, c.Args...)
		}
		if r.wait > 0 {
			w = redis.NewIntCmd(ctx, "wait", r.wait, r.waitTimeout.Milliseconds())
			_ = p.Process(ctx, w)
		}
		return nil
	})
	// A script's own error belongs to its call alone (the caller judges each command).
	if err != nil && !isRedisReply(err) {
		return nil, err
	}
	if w != nil && (w.Err() != nil || w.Val() < int64(r.wait)) {
		for i, c := range cmds {
			if c.Err() == nil {
				cmds[i] = failedCmd(ctx, fmt.Errorf("%w: WAIT: %d of %d replicas (%v)", clusterscript.ErrNotReplicated, w.Val(), r.wait, w.Err()))
			}
		}
	}
	return cmds, nil
}

func failedCmd(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}

// newRunners returns the runner for scripts that change stock (with WAIT if configured)
// and the one for scripts that do not (limiters, waiting-room polls: never WAIT).
func newRunners(rdb redis.UniversalClient, opts Options) (stock, plain scriptRunner, cs *clusterscript.Client) {
	if c, ok := rdb.(*redis.ClusterClient); ok {
		cs = clusterscript.New(c, clusterscript.Options{WaitReplicas: opts.WaitReplicas, WaitTimeout: opts.WaitTimeout})
		return clusterRunner{cs}, clusterRunner{clusterscript.New(c, clusterscript.Options{})}, cs
	}
	return nodeRunner{rdb: rdb, wait: opts.WaitReplicas, timeout: opts.WaitTimeout}, nodeRunner{rdb: rdb}, nil
}
