package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/flashstock/flashstock/internal/embedded"
	"github.com/flashstock/flashstock/loadgen"
	"github.com/flashstock/flashstock/loadgen/bare"
	"github.com/flashstock/flashstock/loadgen/suite"
)

const benchUsage = `usage: flashstock bench [flags]

Drives flash-sale scenarios against the engine, a running server, or two baselines on
bare Redis, and prints attempts, successes, refusals by reason, errors, throughput,
latency percentiles, oversell and false refusals. Examples:

  flashstock bench                                   engine + baselines on a private redis-server
  flashstock bench -target http -url http://127.0.0.1:3000 -jwt-secret "$JWT_SECRET"
  flashstock bench -target http -scenario storm -rate 20000 -duration 30s
  flashstock bench -target engine -scenario queue -buyers 100000 -stock 2000
  flashstock bench -target cluster -duration 5s      carts on one redis-server and on a private
                                                     3+3 Redis Cluster (12 partitions, WAIT 0 and 1)
  flashstock bench -suite                            the whole measured suite (make bench)

flags:`

// benchFlags are the command line of flashstock bench: what to run, and how to print it.
type benchFlags struct {
	suite.Options
	json, suite, webhooks, quiet bool
	// baseline, if set, makes this process one of the suite's baseline servers.
	baseline string
	// serveMongo, if set, makes this process the embedded MongoDB (FerretDB, its data
	// in that directory) of bench -webhooks -worker-nice.
	serveMongo string
}

func parseBenchFlags(args []string, getenv func(string) string, stderr io.Writer) (benchFlags, error) {
	var f benchFlags
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, benchUsage); fs.PrintDefaults() }
	fs.StringVar(&f.Targets, "target", "ceiling,seed-style,engine", "comma-separated targets: engine, http, wrk (hot only), seed-style, ceiling (redis-benchmark), ceiling-pipelined, ceiling-go, cluster (two-line carts on one redis-server and on a private 3+3 Redis Cluster: single- and cross-partition, WAIT 0 and 1, per-node CPU; ignores -scenario, 5s per case by default)")
	fs.StringVar(&f.Scenarios, "scenario", strings.Join(loadgen.Scenarios, ","), "comma-separated scenarios: hot, cart, holds, storm, queue (a drop through a waiting room: every buyer joins before the start, polls with backoff, buys when admitted; engine and http only)")
	fs.StringVar(&f.URL, "url", "", "server for the http target (default http://127.0.0.1:$PORT)")
	fs.StringVar(&f.RedisURL, "redis", "", "Redis for the engine and baselines (default: a private redis-server for this run)")
	fs.StringVar(&f.ClusterAddrs, "cluster-addrs", "", "target cluster: an existing Redis Cluster (seeds host:port,...) instead of a private local 3+3 one; never flushed, the run's SKUs stay (use a staging cluster); its credentials and TLS from $REDIS_CLUSTER_PASSWORD, $REDIS_CLUSTER_USERNAME, $REDIS_CLUSTER_TLS and $REDIS_CLUSTER_CA_FILE, as serve")
	fs.StringVar(&f.Secret, "jwt-secret", getenv("JWT_SECRET"), "the server's JWT_SECRET, to mint buyer tokens (default $JWT_SECRET; without it the demo accounts log in)")
	fs.StringVar(&f.Issuer, "jwt-issuer", or(getenv("JWT_ISSUER"), "flashstock"), "the server's JWT_ISSUER")
	fs.IntVar(&f.Buyers, "buyers", 20000, "attempts per run (closed model); 0 with -duration: as many as fit")
	fs.IntVar(&f.Concurrency, "concurrency", 256, "attempts in flight at once")
	fs.IntVar(&f.Users, "users", 1000, "distinct buyer identities")
	fs.Int64Var(&f.Stock, "stock", 0, "units per SKU (default: the scenario's)")
	fs.Float64Var(&f.Rate, "rate", 0, "open model: attempts started per second (0: closed model)")
	fs.DurationVar(&f.Duration, "duration", 0, "bound each run by time")
	fs.Int64Var(&f.AdmitPerMinute, "admit-per-minute", 0, "queue: the waiting room's admissions per minute (default 60000)")
	fs.BoolVar(&f.json, "json", false, "print the report as JSON")
	fs.BoolVar(&f.NoKeys, "no-keys", false, "send requests without idempotency keys")
	fs.DurationVar(&f.CancelEvery, "cancel-every", 5*time.Millisecond, "storm: how often a sold unit is cancelled, returning it")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress bar")
	fs.BoolVar(&f.suite, "suite", false, "run the whole measured suite: baselines, engine, server over HTTP (own driver and wrk), sold-out storms, memory soak")
	fs.DurationVar(&f.WrkDuration, "wrk-duration", 15*time.Second, "suite: length of the HTTP hot-SKU runs (this tool's and wrk's); the engine's timed steps and the storms take half")
	fs.DurationVar(&f.Soak, "soak", 2*time.Minute, "suite: length of the memory soak (0 skips it)")
	fs.Float64Var(&f.SoakRate, "soak-rate", 5000, "suite: checkouts per second during the soak")
	fs.BoolVar(&f.webhooks, "webhooks", false, "measure webhooks instead: hot checkouts/s with 0, 1 and 10 subscribed endpoints (-rounds each, interleaved), and delivery latency under a flash-sale storm of -buyers (default 5000)")
	fs.IntVar(&f.Rounds, "rounds", 3, "webhooks: runs per endpoint count; target cluster: rounds of its five cases, interleaved, ratios of the medians (1 there unless set)")
	fs.IntVar(&f.WorkerNice, "worker-nice", 0, "webhooks: run the API and, at this nice (1-19), a ROLE=worker process (syncer, webhook feeder and worker); 0: one ROLE=all process")
	fs.StringVar(&f.MongoURI, "mongo", "", "webhooks: the servers' MongoDB (default: an embedded FerretDB)")
	fs.StringVar(&f.serveMongo, "serve-mongo", "", "serve an embedded FerretDB with its data in this directory on 127.0.0.1:$PORT instead of measuring; bench -webhooks -worker-nice starts it itself")
	fs.StringVar(&f.baseline, "serve-baseline", "", "serve a baseline instead of measuring: bare (the bare handler, with $REDIS_URL, $JWT_SECRET, $JWT_ISSUER) or hello (Fiber's hello world), on 127.0.0.1:$PORT; the suite starts these itself")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return f, err
		}
		return f, usageError{err.Error()}
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if f.Duration > 0 && !set["buyers"] {
		f.Buyers = 0 // bounded by time alone
	}
	if slices.Contains(strings.Split(strings.ReplaceAll(f.Targets, " ", ""), ","), suite.ClusterTarget) {
		if !set["duration"] && !set["buyers"] {
			f.Duration, f.Buyers = suite.ClusterDuration, 0 // each cluster case, by time
		}
		if !set["rounds"] && !f.webhooks {
			f.Rounds = 1
		}
	}
	if f.webhooks && !set["buyers"] {
		f.Buyers = 5000
	}
	if f.WorkerNice < 0 || f.WorkerNice > 19 {
		return f, usageError{"bench: -worker-nice must be 0 to 19"}
	}
	if f.webhooks && f.suite {
		return f, usageError{"bench: -webhooks and -suite are separate runs"}
	}
	if fs.NArg() > 0 {
		return f, usageError{fmt.Sprintf("bench: unexpected argument %q", fs.Arg(0))}
	}
	if f.URL == "" {
		f.URL = "http://127.0.0.1:" + or(getenv("PORT"), "3000")
	}
	if f.ClusterAddrs != "" {
		useTLS, ok := boolSetting(or(getenv("REDIS_CLUSTER_TLS"), "false"))
		if !ok {
			return f, usageError{"bench: REDIS_CLUSTER_TLS must be true or false"}
		}
		var err error
		f.ClusterAuth, err = clusterClientOptions(getenv("REDIS_CLUSTER_USERNAME"), getenv("REDIS_CLUSTER_PASSWORD"),
			useTLS, getenv("REDIS_CLUSTER_CA_FILE"))
		if err != nil {
			return f, usageError{"bench: " + err.Error()}
		}
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
	if f.baseline != "" {
		return bare.Serve(ctx, f.baseline, getenv)
	}
	if f.serveMongo != "" {
		m, err := embedded.StartMongo(ctx, f.serveMongo, net.JoinHostPort("127.0.0.1", getenv("PORT")), nil)
		if err != nil {
			return err
		}
		<-ctx.Done()
		return m.Close()
	}
	f.Log = os.Stderr
	if !f.quiet && isatty.IsTerminal(os.Stderr.Fd()) {
		f.Progress = os.Stderr
	}
	var rep *loadgen.Report
	switch {
	case f.suite:
		rep, err = suite.Run(ctx, f.Options)
	case f.webhooks:
		rep, err = suite.RunWebhooks(ctx, f.Options)
	default:
		rep, err = suite.RunTargets(ctx, f.Options)
	}
	if ue := (suite.UsageError{}); errors.As(err, &ue) {
		err = usageError{ue.Msg}
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
