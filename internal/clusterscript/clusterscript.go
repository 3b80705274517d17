// Package clusterscript runs Lua scripts and functions on a Redis Cluster at most once
// each, following MOVED and ASK redirects.
//
// go-redis's ClusterClient cannot do both: its redirect loop (MaxRedirects) also re-sends
// a command whose reply was lost (a read timeout, EOF), so a script may run twice, and
// MaxRedirects -1, which stops that, also stops following MOVED/ASK. Client sends each
// script through the node client of the slot's master (one attempt: the cluster's node
// clients inherit MaxRetries -1) and runs its own redirect loop on top, which re-sends
// only after a node said the script did not run:
//
//   - MOVED: the slot map is reloaded (asynchronously) and the script goes to the node
//     named in the reply.
//   - ASK: the script goes to the named node once, behind ASKING.
//   - NOSCRIPT: the script is sent again to the same node as EVAL (the node caches it).
//   - TRYAGAIN, CLUSTERDOWN, LOADING, MASTERDOWN, READONLY, NOREPLICAS, BUSY and
//     "max number of clients": retried from the slot map after a backoff, for up to
//     Options.RetryFor.
//   - a connection that could not be had (dial error, pool timeout, closed client):
//     nothing was written; the slot map is reloaded and the call retried the same way.
//
// Everything else ends the call. A failure after the script was written (a read or
// write timeout, a broken connection, a context ending while the reply was awaited) is
// never retried: it is returned wrapping ErrOutcomeUnknown (so is a connection that
// timed out during its handshake: go-redis's error does not tell it from a lost reply).
// A refusal that ends the call (retries used up, too many redirects, OOM, NOPERM,
// MISCONF, CROSSSLOT, a context that ended between attempts) wraps ErrNotRun. An error
// reply that is not a refusal (a script's own error, a compile error, an error of a
// command the script called, whatever its first word) is returned as go-redis gave
// it: the script ran, or was rejected for its own sake. A script must therefore never
// return an error reply of its own that starts like a refusal (MOVED, ASK, NOSCRIPT,
// TRYAGAIN, CLUSTERDOWN, ...): the Client cannot tell it from the server's.
//
// Both wrapped errors keep their cause in the chain (errors.Is and errors.As reach the
// net.Error, io.EOF, *net.OpError or redis.Error underneath).
package clusterscript

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	// ErrOutcomeUnknown: the script was sent to a node and no reply came back; it may
	// have run. The caller must find out (an idempotency key), never blindly resend.
	ErrOutcomeUnknown = errors.New("clusterscript: sent, reply lost: the script may have run")
	// ErrNotReplicated: the script ran and answered, but fewer replicas than
	// Options.WaitReplicas confirmed its writes within Options.WaitTimeout. A failover
	// may still lose them, so the outcome is unknown (it wraps ErrOutcomeUnknown).
	ErrNotReplicated = fmt.Errorf("%w: fewer replicas than required confirmed the write", ErrOutcomeUnknown)

	// ErrNotRun: no node ran the script (every attempt was refused or never sent).
	ErrNotRun = errors.New("clusterscript: the script did not run")
)

// Options tune a Client. The zero value is the default for each field.
type Options struct {
	// MaxRedirects bounds the MOVED and ASK replies one call follows (default 5).
	MaxRedirects int
	// RetryFor bounds how long one call keeps retrying refusals and connections
	// that could not be opened (default 2 s; a context deadline also ends it). A
	// failover takes about 2-3 x cluster-node-timeout: longer calls answer ErrNotRun
	// and the caller retries.
	RetryFor time.Duration
	// MinBackoff and MaxBackoff bound the jittered, doubling wait between retries of
	// refusals (defaults 10 ms and 250 ms). Redirects are followed at once.
	MinBackoff, MaxBackoff time.Duration
	// Library, if set, is the source of a function library ("#!lua name=..."): a node
	// that answers FCALL with "Function not found" gets FUNCTION LOAD REPLACE of it
	// and the call is sent again.
	Library string
	// WaitReplicas, if positive, sends WAIT WaitReplicas WaitTimeout behind every Run,
	// FCall and RunBatch pipeline (RunRO excepted), on the same connection and in the
	// same round trip: a script that ran is returned only once that many replicas
	// confirmed its writes, or else wrapped in ErrNotReplicated.
	WaitReplicas int
	// WaitTimeout bounds WAIT (default 100 ms). It must stay well under the node
	// clients' ReadTimeout.
	WaitTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.MaxRedirects <= 0 {
		o.MaxRedirects = 5
	}
	if o.RetryFor <= 0 {
		o.RetryFor = 2 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 10 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 250 * time.Millisecond
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
}

// Stats counts what a Client's calls met, since it was made.
type Stats struct {
	Calls          uint64 // calls made
	Moved          uint64 // MOVED replies followed
	Asked          uint64 // ASK replies followed
	NoScript       uint64 // NOSCRIPT (or "Function not found") replies answered by loading the code
	Refused        uint64 // retryable refusals (TRYAGAIN, CLUSTERDOWN, ...) met
	NotSent        uint64 // attempts that could not reach a node (dial errors, ...)
	OutcomeUnknown uint64 // calls that ended with ErrOutcomeUnknown
	NotRun         uint64 // calls that ended with ErrNotRun
}

// Client runs scripts on the cluster behind rdb at most once each. It implements
// redis.Scripter, so redis.Script.Run(ctx, client, ...) works through it (its EVALSHA
// answers NOSCRIPT wrapped in ErrNotRun; Script.Run then sends EVAL). Safe for
// concurrent use.
type Client struct {
	rdb  *redis.ClusterClient
	opts Options

	nodes sync.Map // node address -> *redis.Client, the cluster client's own node clients

	calls, moved, asked, noScript, refused, notSent, unknown, notRun atomic.Uint64
}

// New returns a Client for rdb. Call it before rdb's first command if you can: it
// learns the node clients rdb creates from then on (OnNewNode) and otherwise has to
// ask rdb for them, which reloads the slot map, at the first redirect to each node.
//
// rdb must not retry commands itself: New panics if rdb.Options().MaxRetries > 0 (a
// node client would then re-send a script whose reply was lost). rdb's MaxRedirects
// does not matter here; scripts never go through rdb's redirect loop.
func New(rdb *redis.ClusterClient, opts Options) *Client {
	if n := rdb.Options().MaxRetries; n > 0 {
		panic(fmt.Sprintf("clusterscript: the cluster client retries commands (MaxRetries %d); set MaxRetries -1", n))
	}
	opts.setDefaults()
	c := &Client{rdb: rdb, opts: opts}
	rdb.OnNewNode(func(n *redis.Client) { c.nodes.Store(n.Options().Addr, n) })
	return c
}

// Stats returns the Client's counters.
func (c *Client) Stats() Stats {
	return Stats{Calls: c.calls.Load(), Moved: c.moved.Load(), Asked: c.asked.Load(),
		NoScript: c.noScript.Load(), Refused: c.refused.Load(), NotSent: c.notSent.Load(),
		OutcomeUnknown: c.unknown.Load(), NotRun: c.notRun.Load()}
}

// Run runs script with keys and args, at most once: EVALSHA, and EVAL on the same node
// if that node does not have the script. keys must not be empty and must all hash to one
// slot (the slot of keys[0] picks the node).
func (c *Client) Run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	return c.runScript(ctx, false, script, keys, args)
}

// RunRO is Run with EVALSHA_RO and EVAL_RO, for scripts that only read. It still goes
// to the master: the point is the same error contract, not reads from replicas.
func (c *Client) RunRO(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	return c.runScript(ctx, true, script, keys, args)
}

func (c *Client) runScript(ctx context.Context, ro bool, script *redis.Script, keys []string, args []any) *redis.Cmd {
	hash := script.Hash()
	src := func(ctx context.Context, cl redis.Cmdable) *redis.Cmd {
		if ro {
			return script.EvalRO(ctx, cl, keys, args...)
		}
		return script.Eval(ctx, cl, keys, args...)
	}
	return c.do(ctx, !ro, keys, func(ctx context.Context, cl redis.Cmdable) *redis.Cmd {
		if ro {
			return cl.EvalShaRO(ctx, hash, keys, args...)
		}
		return cl.EvalSha(ctx, hash, keys, args...)
	}, func(context.Context, *redis.Client) (sender, error) { return src, nil })
}

// Call is one script call of a batch.
type Call struct {
	Script *redis.Script
	Keys   []string
	Args   []any
}

// RunBatch runs calls with one pipelined round trip per master (EVALSHA each), every
// call at most once, and returns one Cmd per call, in order, with Run's error
// contract. A call the pipeline could not complete because its node refused it
// (MOVED, ASK, NOSCRIPT, TRYAGAIN, ...) or could not be reached goes on alone, as Run.
// If a node's connection breaks, every call of that node's pipeline is
// ErrOutcomeUnknown, even one whose reply had already arrived (go-redis overwrites it).
func (c *Client) RunBatch(ctx context.Context, calls []Call) []*redis.Cmd {
	out := make([]*redis.Cmd, len(calls))
	groups := map[*redis.Client][]int{}
	for i, call := range calls {
		if len(call.Keys) == 0 {
			out[i] = c.Run(ctx, call.Script, call.Keys, call.Args...)
			continue
		}
		node, err := c.rdb.MasterForKey(ctx, call.Keys[0])
		if err != nil {
			node = nil // Run starts from the slot map again
		}
		groups[node] = append(groups[node], i)
	}
	var wg sync.WaitGroup
	for node, idx := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if node == nil {
				for _, i := range idx {
					out[i] = c.Run(ctx, calls[i].Script, calls[i].Keys, calls[i].Args...)
				}
				return
			}
			cmds := make([]*redis.Cmd, len(idx))
			var w *redis.IntCmd
			_, _ = node.Pipelined(ctx, func(p redis.Pipeliner) error {
				for j, i := range idx {
					cmds[j] = p.EvalSha(ctx, calls[i].Script.Hash(), calls[i].Keys, calls[i].Args...)
				}
				if c.opts.WaitReplicas > 0 {
					w = c.waitCmd(ctx, p)
				}
				return nil
			})
			for j, i := range idx {
				if w != nil {
					cmds[j] = c.checkWait(ctx, cmds[j], w)
				}
				switch err := cmds[j].Err(); kind(err) {
				case ok, ranWithError:
					c.calls.Add(1)
					out[i] = cmds[j]
				case lost:
					c.calls.Add(1)
					c.unknown.Add(1)
					out[i] = c.fail(ctx, fmt.Errorf("%w (node %s, pipelined): %w", ErrOutcomeUnknown, addrOf(node), err))
				default: // refused or not sent: nothing ran; Run takes it from here
					out[i] = c.Run(ctx, calls[i].Script, calls[i].Keys, calls[i].Args...)
				}
			}
		}()
	}
	wg.Wait()
	return out
}

// FCall calls a function at most once, like Run. If the node does not know the function
// and Options.Library is set, the library is loaded there (FUNCTION LOAD REPLACE) and
// the call sent again; without Library that refusal ends the call (ErrNotRun).
func (c *Client) FCall(ctx context.Context, function string, keys []string, args ...any) *redis.Cmd {
	return c.do(ctx, true, keys, func(ctx context.Context, cl redis.Cmdable) *redis.Cmd {
		return cl.FCall(ctx, function, keys, args...)
	}, c.loadLibrary)
}

func (c *Client) loadLibrary(ctx context.Context, node *redis.Client) (sender, error) {
	if c.opts.Library == "" {
		return nil, errors.New("no function library configured (Options.Library)")
	}
	if err := node.FunctionLoadReplace(ctx, c.opts.Library).Err(); err != nil {
		return nil, fmt.Errorf("FUNCTION LOAD on %s: %w", node.Options().Addr, err)
	}
	return nil, nil // send the same FCALL again
}

// Eval runs src at most once (redis.Scripter).
func (c *Client) Eval(ctx context.Context, src string, keys []string, args ...any) *redis.Cmd {
	return c.do(ctx, true, keys, func(ctx context.Context, cl redis.Cmdable) *redis.Cmd {
		return cl.Eval(ctx, src, keys, args...)
	}, nil)
}

// EvalRO runs src with EVAL_RO at most once (redis.Scripter).
func (c *Client) EvalRO(ctx context.Context, src string, keys []string, args ...any) *redis.Cmd {
	return c.do(ctx, false, keys, func(ctx context.Context, cl redis.Cmdable) *redis.Cmd {
		return cl.EvalRO(ctx, src, keys, args...)
	}, nil)
}

// EvalSha runs a cached script at most once (redis.Scripter). A node without the
// script answers NOSCRIPT, returned wrapped in ErrNotRun (redis.Script.Run sees it and
// falls back to Eval).
func (c *Client) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return c.do(ctx, true, keys, func(ctx context.Context, cl redis.Cmdable) *redis.Cmd {
		return cl.EvalSha(ctx, sha1, keys, args...)
	}, nil)
}

// EvalShaRO is EvalSha with EVALSHA_RO (redis.Scripter).
func (c *Client) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return c.do(ctx, false, keys, func(ctx context.Context, cl redis.Cmdable) *redis.Cmd {
		return cl.EvalShaRO(ctx, sha1, keys, args...)
	}, nil)
}

// ScriptExists asks every node (rdb's ScriptExists): true only where all have it.
func (c *Client) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return c.rdb.ScriptExists(ctx, hashes...)
}

// ScriptLoad loads src on every node (rdb's ScriptLoad). Not needed before Run: a node
// without the script gets it through EVAL.
func (c *Client) ScriptLoad(ctx context.Context, src string) *redis.StringCmd {
	return c.rdb.ScriptLoad(ctx, src)
}

var _ redis.Scripter = (*Client)(nil)

// sender writes one command to cl (a node client or a pipeline on one).
type sender func(ctx context.Context, cl redis.Cmdable) *redis.Cmd

// loader answers a node that lacks the code: it returns the sender to use instead, or
// nil to send the same command again (after loading the code there).
type loader func(ctx context.Context, node *redis.Client) (sender, error)

// do is the redirect loop. Only replies and errors that prove the command did not run
// lead to another send.
func (c *Client) do(ctx context.Context, wait bool, keys []string, send sender, load loader) *redis.Cmd {
	c.calls.Add(1)
	if len(keys) == 0 {
		return c.fail(ctx, c.notRunErr(errors.New("a script needs at least one key to pick its node"), "", 0))
	}
	start := time.Now()
	var (
		node      *redis.Client // nil: ask the slot map
		asking    bool
		redirects int
		retries   int
		loaded    bool
	)
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return c.fail(ctx, c.notRunErr(err, addrOf(node), attempt-1))
		}
		if node == nil {
			n, err := c.rdb.MasterForKey(ctx, keys[0])
			if err != nil {
				// No slot map and no node that could give one: nothing was sent.
				c.notSent.Add(1)
				if err := c.backoff(ctx, start, &retries, err); err != nil {
					return c.fail(ctx, c.notRunErr(err, "", attempt))
				}
				continue
			}
			node = n
		}
		cmd := c.send(ctx, node, asking, wait && c.opts.WaitReplicas > 0, send)
		err := cmd.Err()
		wasAsking := asking
		asking = false
		switch kind(err) {
		case ok, ranWithError:
			return cmd

		case moved:
			addr, _ := redis.IsMovedError(err)
			c.moved.Add(1)
			if redirects++; redirects > c.opts.MaxRedirects {
				return c.fail(ctx, c.notRunErr(fmt.Errorf("more than %d redirects: %w", c.opts.MaxRedirects, err), addrOf(node), attempt))
			}
			c.rdb.ReloadState(ctx) // asynchronous: the next calls route right
			node = c.nodeAt(ctx, addr)

		case ask:
			addr, _ := redis.IsAskError(err)
			c.asked.Add(1)
			if redirects++; redirects > c.opts.MaxRedirects {
				return c.fail(ctx, c.notRunErr(fmt.Errorf("more than %d redirects: %w", c.opts.MaxRedirects, err), addrOf(node), attempt))
			}
			node = c.nodeAt(ctx, addr)
			asking = node != nil

		case notLoaded:
			if load == nil || loaded {
				return c.fail(ctx, c.notRunErr(err, addrOf(node), attempt))
			}
			c.noScript.Add(1)
			loaded = true
			next, lerr := load(ctx, node)
			if lerr != nil {
				return c.fail(ctx, c.notRunErr(fmt.Errorf("%w (loading the code: %w)", err, lerr), addrOf(node), attempt))
			}
			if next != nil {
				send = next
			}
			// Same node again at once; an ASK target needs ASKING again.
			asking = wasAsking

		case refused:
			c.refused.Add(1)
			if redis.IsReadOnlyError(err) {
				c.rdb.ReloadState(ctx) // the node is a replica now
			}
			if berr := c.backoff(ctx, start, &retries, err); berr != nil {
				return c.fail(ctx, c.notRunErr(berr, addrOf(node), attempt))
			}
			node = nil

		case refusedFinal:
			return c.fail(ctx, c.notRunErr(err, addrOf(node), attempt))

		case notSent:
			c.notSent.Add(1)
			if errors.Is(err, redis.ErrClosed) {
				// A node client rdb closed (its node left the slot map): forget it.
				c.nodes.CompareAndDelete(node.Options().Addr, node)
			}
			c.rdb.ReloadState(ctx) // a dead master: find its heir
			if berr := c.backoff(ctx, start, &retries, err); berr != nil {
				return c.fail(ctx, c.notRunErr(berr, addrOf(node), attempt))
			}
			node = nil

		default: // lost: the command was written and no reply came back
			c.unknown.Add(1)
			return c.fail(ctx, fmt.Errorf("%w (node %s, attempt %d): %w", ErrOutcomeUnknown, addrOf(node), attempt, err))
		}
	}
}

// send writes the command once to node, behind ASKING if asking, and followed by WAIT
// in the same pipeline if wait.
func (c *Client) send(ctx context.Context, node *redis.Client, asking, wait bool, send sender) *redis.Cmd {
	if !asking && !wait {
		return send(ctx, node)
	}
	pipe := node.Pipeline()
	if asking {
		_ = pipe.Process(ctx, redis.NewStatusCmd(ctx, "asking"))
	}
	cmd := send(ctx, pipe)
	var w *redis.IntCmd
	if wait {
		w = c.waitCmd(ctx, pipe)
	}
	_, _ = pipe.Exec(ctx)
	if w != nil {
		return c.checkWait(ctx, cmd, w)
	}
	return cmd
}

// waitCmd queues WAIT on p.
func (c *Client) waitCmd(ctx context.Context, p redis.Pipeliner) *redis.IntCmd {
	w := redis.NewIntCmd(ctx, "wait", c.opts.WaitReplicas, c.opts.WaitTimeout.Milliseconds())
	_ = p.Process(ctx, w)
	return w
}

// checkWait turns a script that ran without the replicas' confirmation into
// ErrNotReplicated. A script that did not run, or failed for its own sake, is
// returned as it is: WAIT says nothing about it.
func (c *Client) checkWait(ctx context.Context, cmd *redis.Cmd, w *redis.IntCmd) *redis.Cmd {
	if kind(cmd.Err()) != ok {
		return cmd
	}
	if err := w.Err(); err != nil {
		return c.fail(ctx, fmt.Errorf("%w: WAIT: %w", ErrNotReplicated, err))
	}
	if n := w.Val(); n < int64(c.opts.WaitReplicas) {
		return c.fail(ctx, fmt.Errorf("%w: %d of %d replicas within %v", ErrNotReplicated, n, c.opts.WaitReplicas, c.opts.WaitTimeout))
	}
	return cmd
}

// nodeAt returns rdb's node client for addr, or nil if the cluster does not list addr
// (the loop then starts over from the slot map).
func (c *Client) nodeAt(ctx context.Context, addr string) *redis.Client {
	if n, ok := c.nodes.Load(addr); ok {
		return n.(*redis.Client)
	}
	// Not seen yet (New was called after rdb made it): ForEachShard reloads the slot
	// map and hands out every node client.
	_ = c.rdb.ForEachShard(ctx, func(_ context.Context, n *redis.Client) error {
		c.nodes.LoadOrStore(n.Options().Addr, n)
		return nil
	})
	if n, ok := c.nodes.Load(addr); ok {
		return n.(*redis.Client)
	}
	return nil
}

// backoff waits before retrying a refusal, or returns why not: the time for retries is
// used up (last is the refusal) or ctx ended.
func (c *Client) backoff(ctx context.Context, start time.Time, retries *int, last error) error {
	d := c.opts.MinBackoff << min(*retries, 16)
	if d <= 0 || d > c.opts.MaxBackoff {
		d = c.opts.MaxBackoff
	}
	d = d/2 + rand.N(d/2+1)
	*retries++
	if time.Since(start)+d > c.opts.RetryFor {
		return fmt.Errorf("refused or unreachable for %v: %w", time.Since(start).Round(time.Millisecond), last)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w (while retrying after: %w)", ctx.Err(), last)
	}
}

func (c *Client) notRunErr(err error, addr string, attempts int) error {
	c.notRun.Add(1)
	if addr == "" {
		return fmt.Errorf("%w (%d attempts): %w", ErrNotRun, attempts, err)
	}
	return fmt.Errorf("%w (node %s, %d attempts): %w", ErrNotRun, addr, attempts, err)
}

func (c *Client) fail(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}

func addrOf(n *redis.Client) string {
	if n == nil {
		return "?"
	}
	return n.Options().Addr
}

// raisedInScript reports an error reply raised by a command the script called: Redis
// appends "script: <sha or function>, on @user_script:<line>." (or @user_function) to
// it. Such a reply can start with a refusal word (an OOM on the script's second write)
// although the script ran up to that call, so it must never lead to another send.
func raisedInScript(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return strings.Contains(msg, " script: ") &&
		(strings.Contains(msg, ", on @user_script:") || strings.Contains(msg, ", on @user_function:"))
}

type errKind int

const (
	ok           errKind = iota
	ranWithError         // an error reply that is not a refusal: returned as is
	moved
	ask
	notLoaded    // NOSCRIPT, Function not found
	refused      // refused for the node's or cluster's state, worth retrying
	refusedFinal // refused, not worth retrying
	notSent      // never written: no connection
	lost         // written, no reply
)

// kind sorts a send's error. The order matters: a refusal is a redis.Error, and a
// dial error wrapped in a context deadline is still a dial error.
func kind(err error) errKind {
	if err == nil {
		return ok
	}
	if raisedInScript(err) {
		return ranWithError
	}
	if _, ok := redis.IsMovedError(err); ok {
		return moved
	}
	if _, ok := redis.IsAskError(err); ok {
		return ask
	}
	if errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT") ||
		redis.HasErrorPrefix(err, "Function not found") {
		return notLoaded
	}
	if redis.IsTryAgainError(err) || redis.IsClusterDownError(err) || redis.IsLoadingError(err) ||
		redis.IsMasterDownError(err) || redis.IsReadOnlyError(err) || redis.IsNoReplicasError(err) ||
		redis.IsMaxClientsError(err) || redis.HasErrorPrefix(err, "BUSY ") {
		return refused
	}
	if redis.IsOOMError(err) || redis.IsAuthError(err) || redis.IsPermissionError(err) ||
		redis.HasErrorPrefix(err, "MISCONF ") || redis.HasErrorPrefix(err, "CROSSSLOT ") {
		return refusedFinal
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return notSent
	}
	if errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted) || errors.Is(err, redis.ErrClosed) {
		return notSent
	}
	var re redis.Error
	if errors.As(err, &re) {
		var ne net.Error
		if !errors.As(err, &ne) {
			return ranWithError
		}
	}
	return lost
}
