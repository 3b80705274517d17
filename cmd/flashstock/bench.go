package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/redisserver"
	"github.com/flashstock/flashstock/loadgen"
)

const benchUsage = `usage: flashstock bench [flags]

Drives flash-sale scenarios against the engine, a running server, or two baselines on
bare Redis, and prints attempts, successes, refusals by reason, errors, throughput,
latency percentiles, oversell and false refusals. Examples:

  flashstock bench                                   engine + baselines on a private redis-server
  flashstock bench -target http -url http://127.0.0.1:3000 -jwt-secret "$JWT_SECRET"
  flashstock bench -target http -scenario storm -rate 20000 -duration 30s
  flashstock bench -suite                            the whole measured suite (make bench)

flags:`

// benchFlags are the command line of flashstock bench.
type benchFlags struct {
	targets, scenarios string
	url, redisURL      string
	secret, issuer     string
	buyers, conc       int
	users              int
	stock              int64
	rate               float64
	duration           time.Duration
	json, suite, quiet bool
	noKeys             bool
	cancelEvery        time.Duration
	// suite only
	wrkDuration, soak time.Duration
	soakRate          float64
}

func parseBenchFlags(args []string, getenv func(string) string, stderr io.Writer) (benchFlags, error) {
	var f benchFlags
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, benchUsage); fs.PrintDefaults() }
	fs.StringVar(&f.targets, "target", "ceiling,seed-style,engine", "comma-separated targets: engine, http, wrk (hot only), seed-style, ceiling (redis-benchmark), ceiling-pipelined, ceiling-go")
	fs.StringVar(&f.scenarios, "scenario", strings.Join(loadgen.Scenarios, ","), "comma-separated scenarios: hot, cart, holds, storm")
	fs.StringVar(&f.url, "url", "", "server for the http target (default http://127.0.0.1:$PORT)")
	fs.StringVar(&f.redisURL, "redis", "", "Redis for the engine and baselines (default: a private redis-server for this run)")
	fs.StringVar(&f.secret, "jwt-secret", getenv("JWT_SECRET"), "the server's JWT_SECRET, to mint buyer tokens (default $JWT_SECRET; without it the demo accounts log in)")
	fs.StringVar(&f.issuer, "jwt-issuer", or(getenv("JWT_ISSUER"), "flashstock"), "the server's JWT_ISSUER")
	fs.IntVar(&f.buyers, "buyers", 20000, "attempts per run (closed model); 0 with -duration: as many as fit")
	fs.IntVar(&f.conc, "concurrency", 256, "attempts in flight at once")
	fs.IntVar(&f.users, "users", 1000, "distinct buyer identities")
	fs.Int64Var(&f.stock, "stock", 0, "units per SKU (default: the scenario's)")
	fs.Float64Var(&f.rate, "rate", 0, "open model: attempts started per second (0: closed model)")
	fs.DurationVar(&f.duration, "duration", 0, "bound each run by time")
	fs.BoolVar(&f.json, "json", false, "print the report as JSON")
	fs.BoolVar(&f.noKeys, "no-keys", false, "send requests without idempotency keys")
	fs.DurationVar(&f.cancelEvery, "cancel-every", 5*time.Millisecond, "storm: how often a sold unit is cancelled, returning it")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress bar")
	fs.BoolVar(&f.suite, "suite", false, "run the whole measured suite: baselines, engine, server over HTTP (own driver and wrk), sold-out storms, memory soak")
	fs.DurationVar(&f.wrkDuration, "wrk-duration", 15*time.Second, "suite: length of the HTTP hot-SKU runs (this tool's and wrk's); the engine's timed steps and the storms take half")
	fs.DurationVar(&f.soak, "soak", 2*time.Minute, "suite: length of the memory soak (0 skips it)")
	fs.Float64Var(&f.soakRate, "soak-rate", 5000, "suite: checkouts per second during the soak")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return f, err
		}
		return f, usageError{err.Error()}
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if f.duration > 0 && !set["buyers"] {
		f.buyers = 0 // bounded by time alone
	}
	if fs.NArg() > 0 {
		return f, usageError{fmt.Sprintf("bench: unexpected argument %q", fs.Arg(0))}
	}
	if f.url == "" {
		f.url = "http://127.0.0.1:" + or(getenv("PORT"), "3000")
	}
	return f, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// bench is `flashstock bench`.
func bench(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	f, err := parseBenchFlags(args, getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	var progress io.Writer
	if !f.quiet && isatty.IsTerminal(os.Stderr.Fd()) {
		progress = os.Stderr
	}
	var rep *loadgen.Report
	if f.suite {
		rep, err = benchSuite(ctx, f, progress, os.Stderr)
	} else {
		rep, err = benchRuns(ctx, f, progress)
	}
	if rep != nil {
		if f.json {
			if werr := rep.WriteJSON(stdout); werr != nil {
				return werr
			}
		} else if werr := rep.WriteTable(stdout); werr != nil {
			return werr
		}
	}
	return err
}

// benchRuns runs every chosen scenario on every chosen target.
func benchRuns(ctx context.Context, f benchFlags, progress io.Writer) (*loadgen.Report, error) {
	var targets []loadgen.Target
	var rdb *redis.Client
	rep := &loadgen.Report{Machine: machine()}
	for _, name := range strings.Split(f.targets, ",") {
		switch name = strings.TrimSpace(name); name {
		case "http", "wrk":
			h, err := loadgen.NewHTTP(ctx, f.url, loadgen.HTTPOptions{Secret: []byte(f.secret), Issuer: f.issuer, Users: f.users, Conns: f.conc})
			if err != nil {
				return nil, err
			}
			defer h.Close()
			if name == "http" {
				targets = append(targets, h)
				continue
			}
			r, err := h.Wrk(ctx, loadgen.WrkConfig{Threads: 2, Conns: f.conc, Duration: max(f.duration, 5*time.Second)})
			if err != nil {
				return rep, err
			}
			rep.Results = append(rep.Results, r)
		case "engine", "seed-style", "ceiling", "ceiling-pipelined", "ceiling-go":
			if rdb == nil {
				c, stop, err := benchRedis(f.redisURL, f.conc)
				if err != nil {
					return nil, err
				}
				defer stop()
				rdb = c
			}
			switch name {
			case "engine":
				inv := engine.NewRedis(rdb, engine.Options{})
				defer inv.Close()
				targets = append(targets, loadgen.Engine{Inv: inv})
			case "seed-style":
				targets = append(targets, loadgen.SeedStyle{RDB: rdb})
			case "ceiling-go":
				targets = append(targets, loadgen.Ceiling{RDB: rdb})
			default:
				if err := ceilings(ctx, rep, rdb, f.conc, f.requests(), name == "ceiling-pipelined"); err != nil {
					return rep, err
				}
			}
		default:
			return nil, usageError{fmt.Sprintf("bench: unknown target %q", name)}
		}
	}
	for _, t := range targets {
		for _, sc := range strings.Split(f.scenarios, ",") {
			sc = strings.TrimSpace(sc)
			if !supports(t, sc) {
				continue
			}
			r, err := loadgen.Run(ctx, t, f.config(sc), progress)
			if err != nil {
				return rep, err
			}
			rep.Results = append(rep.Results, r)
		}
	}
	addRatios(rep)
	return rep, nil
}

// requests is how many calls a redis-benchmark run makes: the buyers, or about as many
// as fit in the duration.
func (f benchFlags) requests() int {
	if f.buyers > 0 {
		return f.buyers
	}
	return int(max(f.duration.Seconds(), 1) * 60_000)
}

// ceilings runs redis-benchmark: one call per round trip, or (pipelined) 16.
func ceilings(ctx context.Context, rep *loadgen.Report, rdb *redis.Client, conns, requests int, pipelined bool) error {
	p := 1
	if pipelined {
		p, requests = 16, requests*4
	}
	r, err := loadgen.RedisBenchmark(ctx, rdb, conns, requests, p)
	if err != nil {
		return err
	}
	rep.Results = append(rep.Results, r)
	return nil
}

func (f benchFlags) config(scenario string) loadgen.Config {
	return loadgen.Config{Scenario: scenario, Buyers: f.buyers, Concurrency: f.conc, Users: f.users,
		Stock: f.stock, Rate: f.rate, Duration: f.duration, NoKeys: f.noKeys, CancelEvery: f.cancelEvery}
}

// supports says whether a target can run a scenario: the baselines sell one line, with
// neither holds nor cancellation.
func supports(t loadgen.Target, scenario string) bool {
	switch t.(type) {
	case loadgen.SeedStyle, loadgen.Ceiling:
		return scenario == loadgen.Hot
	}
	return true
}

// benchRedis connects to url, or starts a private redis-server when url is empty.
func benchRedis(url string, conns int) (*redis.Client, func(), error) {
	if url != "" {
		o, err := redis.ParseURL(url)
		if err != nil {
			return nil, nil, usageError{fmt.Sprintf("bench: -redis: %v", err)}
		}
		o.PoolSize = max(o.PoolSize, conns)
		// engine.NoRetries: MaxRetries -1, a lost reply is never re-sent.
		c := redis.NewClient(engine.NoRetries(o))
		return c, func() { c.Close() }, nil
	}
	dir, err := os.MkdirTemp("", "flashstock-bench-redis-")
	if err != nil {
		return nil, nil, err
	}
	srv, err := redisserver.Start(dir, "--save", "", "--appendonly", "no")
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	// engine.NoRetries: MaxRetries -1, a lost reply is never re-sent.
	c := redis.NewClient(engine.NoRetries(&redis.Options{Addr: srv.Addr, PoolSize: max(conns, 64)}))
	return c, func() { c.Close(); srv.Stop(); os.RemoveAll(dir) }, nil
}

// addRatios sets the figures the targets are judged by side by side.
func addRatios(rep *loadgen.Report) {
	seed := rep.Find("seed-style", loadgen.Hot)
	for _, name := range []string{"engine", "http", "wrk"} {
		r := rep.Find(name, loadgen.Hot)
		if r == nil {
			continue
		}
		for _, c := range []string{"ceiling", "ceiling-pipelined", "ceiling-go"} {
			if ceiling := rep.Find(c, loadgen.Hot); ceiling != nil {
				rep.AddRatio(name+" hot checkouts/s ÷ "+c, r.SuccessesPerSecond, ceiling.SuccessesPerSecond)
			}
		}
		if seed != nil {
			rep.AddRatio(name+" hot checkouts/s ÷ seed-style", r.SuccessesPerSecond, seed.SuccessesPerSecond)
		}
	}
	if own, wrk := rep.Find("http", loadgen.Hot), rep.Find("wrk", loadgen.Hot); own != nil && wrk != nil {
		rep.AddRatio("own HTTP driver ÷ wrk (hot)", own.AttemptsPerSecond, wrk.AttemptsPerSecond)
	}
	// Sold-out refusals against checkouts, both from this driver: a storm's rate is
	// refusals over the time since the first one (the sellout takes milliseconds).
	for _, x := range rep.Results {
		if x.Scenario != loadgen.Storm {
			continue
		}
		if hot := rep.Find(strings.TrimSuffix(x.Target, " soldout-cache"), loadgen.Hot); hot != nil {
			name := x.Target + " storm"
			if strings.HasSuffix(x.Model, "no keys") {
				name += " (no keys)"
			}
			rep.AddRatio(name+" refusals/s ÷ "+hot.Target+" hot checkouts/s", x.RefusalsPerSecond, hot.SuccessesPerSecond)
			// The same ratio from CPU per attempt (all processes): the two runs above are
			// taken seconds apart on a host whose speed drifts; CPU cost drifts less.
			if c, h := x.DriverCPU+x.ServerCPU+x.RedisCPU, hot.DriverCPU+hot.ServerCPU+hot.RedisCPU; c > 0 && h > 0 {
				rep.AddRatio(name+", by CPU per attempt", h, c)
			}
		}
	}
}

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
