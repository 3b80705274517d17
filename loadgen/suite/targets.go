package suite

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/redisserver"
	"github.com/flashstock/flashstock/loadgen"
)

// RunTargets runs every chosen scenario on every chosen target.
func RunTargets(ctx context.Context, f Options) (*loadgen.Report, error) {
	var targets []loadgen.Target
	var rdb *redis.Client
	cluster := false
	rep := &loadgen.Report{Machine: machine()}
	users := f.Users
	if slices.Contains(strings.Split(strings.ReplaceAll(f.Scenarios, " ", ""), ","), loadgen.Queue) {
		users = max(users, f.Buyers) // the queue scenario's buyers are all different people
	}
	for _, name := range strings.Split(f.Targets, ",") {
		switch name = strings.TrimSpace(name); name {
		case "http", "wrk":
			h, err := loadgen.NewHTTP(ctx, f.URL, loadgen.HTTPOptions{Secret: []byte(f.Secret), Issuer: f.Issuer, Users: users, Conns: f.Concurrency})
			if err != nil {
				return nil, err
			}
			defer h.Close()
			if name == "http" {
				targets = append(targets, h)
				continue
			}
			r, err := h.Wrk(ctx, loadgen.WrkConfig{Threads: 2, Conns: f.Concurrency, Duration: max(f.Duration, 5*time.Second)})
			if err != nil {
				return rep, err
			}
			rep.Results = append(rep.Results, r)
		case "engine", "seed-style", "ceiling", "ceiling-pipelined", "ceiling-go":
			if rdb == nil {
				c, stop, err := redisClient(f.RedisURL, f.Concurrency)
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
				if err := ceilings(ctx, rep, rdb, f.Concurrency, f.requests(), name == "ceiling-pipelined"); err != nil {
					return rep, err
				}
			}
		case ClusterTarget:
			cluster = true // after the others: it starts and stops its own servers
		default:
			return nil, UsageError{fmt.Sprintf("bench: unknown target %q", name)}
		}
	}
	for _, t := range targets {
		for _, sc := range strings.Split(f.Scenarios, ",") {
			sc = strings.TrimSpace(sc)
			if !supports(t, sc) {
				continue
			}
			r, err := loadgen.Run(ctx, t, f.config(sc), f.Progress)
			if err != nil {
				return rep, err
			}
			rep.Results = append(rep.Results, r)
		}
	}
	if cluster {
		if err := runCluster(ctx, f, rep); err != nil {
			return rep, err
		}
	}
	addRatios(rep)
	return rep, nil
}

// requests is how many calls a redis-benchmark run makes: the buyers, or about as many
// as fit in the duration.
func (f Options) requests() int {
	if f.Buyers > 0 {
		return f.Buyers
	}
	return int(max(f.Duration.Seconds(), 1) * 60_000)
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

func (f Options) config(scenario string) loadgen.Config {
	return loadgen.Config{Scenario: scenario, Buyers: f.Buyers, Concurrency: f.Concurrency, Users: f.Users,
		Stock: f.Stock, Rate: f.Rate, Duration: f.Duration, NoKeys: f.NoKeys, CancelEvery: f.CancelEvery,
		AdmitPerMinute: f.AdmitPerMinute}
}

// supports says whether a target can run a scenario: the baselines sell one line, with
// neither holds nor cancellation.
func supports(t loadgen.Target, scenario string) bool {
	if scenario == loadgen.Queue {
		_, ok := t.(loadgen.Queuer)
		return ok
	}
	switch t.(type) {
	case loadgen.SeedStyle, loadgen.Ceiling:
		return scenario == loadgen.Hot
	}
	return true
}

// redisClient connects to url, or starts a private redis-server when url is empty.
func redisClient(url string, conns int) (*redis.Client, func(), error) {
	if url != "" {
		o, err := redis.ParseURL(url)
		if err != nil {
			return nil, nil, UsageError{fmt.Sprintf("bench: -redis: %v", err)}
		}
		o.PoolSize = max(o.PoolSize, conns)
		// engine.NoRetries: MaxRetries -1, a lost reply is never re-sent
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
	// engine.NoRetries: MaxRetries -1, a lost reply is never re-sent
	c := redis.NewClient(engine.NoRetries(&redis.Options{Addr: srv.Addr, PoolSize: max(conns, 64)}))
	return c, func() { c.Close(); srv.Stop(); os.RemoveAll(dir) }, nil
}
