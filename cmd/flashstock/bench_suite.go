package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/redisserver"
	"github.com/flashstock/flashstock/loadgen"
)

// benchSuite is `flashstock bench -suite` (make bench): every figure docs/BENCHMARKS.md
// reports, from one run, so that each ratio compares figures taken minutes apart on the
// same machine. It starts its own redis-server and its own server processes (this
// binary, `serve`, on that Redis with embedded FerretDB) and needs wrk on PATH.
func benchSuite(ctx context.Context, f benchFlags, progress, logw io.Writer) (*loadgen.Report, error) {
	rep := &loadgen.Report{Machine: machine()}
	say := func(format string, args ...any) { fmt.Fprintf(logw, "bench: "+format+"\n", args...) }
	run := func(t loadgen.Target, cfg loadgen.Config) error {
		r, err := loadgen.Run(ctx, t, cfg, progress)
		if err != nil {
			return fmt.Errorf("%s %s: %w", t.Name(), cfg.Scenario, err)
		}
		rep.Results = append(rep.Results, r)
		if progress == nil {
			say("%s %s: %.0f attempts/s, %d ok, %d refused, %d errors", r.Target, r.Scenario,
				r.AttemptsPerSecond, r.Successes, r.Attempts-r.Successes-sumErrors(r), sumErrors(r))
		}
		return nil
	}
	dir, err := os.MkdirTemp("", "flashstock-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := redisserver.Start(dir, "--save", "", "--appendonly", "no")
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	rdb, stop, err := benchRedis("redis://"+srv.Addr, f.conc)
	if err != nil {
		return nil, err
	}
	defer stop()

	// 1. The engine and the two baselines, on the same Redis and the same driver.
	say("redis-server %s on %s; engine-level runs", redisVersion(), srv.Addr)
	timed := func(sc string, d time.Duration) loadgen.Config {
		return loadgen.Config{Scenario: sc, Duration: d, Concurrency: f.conc, Users: f.users}
	}
	for _, pipelined := range []bool{false, true} {
		if err := ceilings(ctx, rep, rdb, f.conc, int(f.wrkDuration.Seconds()*20_000), pipelined); err != nil {
			return rep, err
		}
	}
	inv := engine.NewRedis(rdb, engine.Options{})
	defer inv.Close()
	for _, step := range []struct {
		t   loadgen.Target
		cfg loadgen.Config
	}{
		{loadgen.Ceiling{RDB: rdb}, timed(loadgen.Hot, f.wrkDuration/2)},
		{loadgen.SeedStyle{RDB: rdb}, timed(loadgen.Hot, f.wrkDuration/2)},
		{loadgen.Engine{Inv: inv}, timed(loadgen.Hot, f.wrkDuration/2)},
		{loadgen.Engine{Inv: inv}, loadgen.Config{Scenario: loadgen.Cart, Buyers: 100_000, Concurrency: f.conc, Users: f.users}},
		{loadgen.Engine{Inv: inv}, loadgen.Config{Scenario: loadgen.Holds, Buyers: 50_000, Concurrency: f.conc, Users: f.users}},
		{loadgen.Engine{Inv: inv}, loadgen.Config{Scenario: loadgen.Storm, Buyers: 200_000, Concurrency: f.conc, Users: f.users}},
	} {
		if err := run(step.t, step.cfg); err != nil {
			return rep, err
		}
	}

	// 2. The server over HTTP: the same scenarios from this driver, and hot from wrk.
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	env := map[string]string{"REDIS_URL": "redis://" + srv.Addr, "JWT_SECRET": hex.EncodeToString(secret),
		"RATE_LIMIT_PER_MINUTE": "0", "ROLE": "api", "LOG_LEVEL": "warn"}
	server, err := startServer(ctx, filepath.Join(dir, "server"), env, logw)
	if err != nil {
		return rep, err
	}
	defer server.stop()
	say("server (ROLE=api, RATE_LIMIT_PER_MINUTE=0) on %s", server.url)
	h, err := loadgen.NewHTTP(ctx, server.url, loadgen.HTTPOptions{Secret: []byte(env["JWT_SECRET"]), Users: f.users, Conns: f.conc})
	if err != nil {
		return rep, err
	}
	defer h.Close()
	if err := run(h, timed(loadgen.Hot, f.wrkDuration)); err != nil {
		return rep, err
	}
	say("wrk -t2 -c%d -d%s on the same server", f.conc, f.wrkDuration)
	w, err := h.Wrk(ctx, loadgen.WrkConfig{Threads: 2, Conns: f.conc, Duration: f.wrkDuration})
	if err != nil {
		return rep, err
	}
	rep.Results = append(rep.Results, w)
	for _, cfg := range []loadgen.Config{
		{Scenario: loadgen.Cart, Buyers: 40_000, Concurrency: f.conc, Users: f.users},
		{Scenario: loadgen.Holds, Buyers: 20_000, Concurrency: f.conc, Users: f.users},
		timed(loadgen.Storm, f.wrkDuration/2),
	} {
		if err := run(h, cfg); err != nil {
			return rep, err
		}
	}

	// 3. The sold-out storm again with SOLDOUT_CACHE_MS on, from a second server.
	env["SOLDOUT_CACHE_MS"] = "50"
	cached, err := startServer(ctx, filepath.Join(dir, "server-cached"), env, logw)
	if err != nil {
		return rep, err
	}
	hc, err := loadgen.NewHTTP(ctx, cached.url, loadgen.HTTPOptions{Secret: []byte(env["JWT_SECRET"]), Users: f.users, Conns: f.conc})
	if err != nil {
		cached.stop()
		return rep, err
	}
	err = run(renamed{hc, "http soldout-cache"}, timed(loadgen.Storm, f.wrkDuration/2))
	hc.Close()
	cached.stop()
	if err != nil {
		return rep, err
	}

	// 4. A sustained run at a fixed rate, with the server's memory sampled.
	if f.soak > 0 {
		say("soak: %.0f checkouts/s for %s, server memory sampled every 10 s", f.soakRate, f.soak)
		s, err := h.RunSoak(ctx, loadgen.Config{Scenario: loadgen.Hot, Rate: f.soakRate, Duration: f.soak,
			Concurrency: f.conc, Users: f.users}, 10*time.Second, progress)
		if err != nil {
			return rep, err
		}
		rep.Soak = s
	}
	addRatios(rep)
	return rep, nil
}

func sumErrors(r *loadgen.Result) int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// renamed gives a target another name in the report (the same server, configured
// differently).
type renamed struct {
	*loadgen.HTTP
	name string
}

func (r renamed) Name() string { return r.name }

func redisVersion() string {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return "?"
	}
	return string(out[:min(len(out), 32)])
}

// child is a flashstock server process started by the suite.
type child struct {
	url  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startServer runs this binary's serve with env (and DATA_DIR, PORT) and waits until it
// is ready.
func startServer(ctx context.Context, dataDir string, env map[string]string, logw io.Writer) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := redisserver.FreePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "serve")
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "DATA_DIR="+dataDir, "MONGODB_URI=", "SEED_DEMO=false")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{url: "http://127.0.0.1:" + strconv.Itoa(port), cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"/readyz", nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		select {
		case <-c.done:
			return nil, fmt.Errorf("server exited before it was ready")
		case <-ctx.Done():
			c.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, fmt.Errorf("server on %s not ready after 60 s", c.url)
		}
	}
}

// stop asks the server to shut down (SIGINT) and waits; it kills it after 15 s.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}
