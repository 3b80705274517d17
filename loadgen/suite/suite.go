package suite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/redisserver"
	"github.com/flashstock/flashstock/loadgen"
)

// suite runs the measured steps of `flashstock bench -suite` and keeps their results.
type suite struct {
	ctx       context.Context
	rep       *loadgen.Report
	progress  io.Writer
	log       io.Writer
	redisPid  int
	serverPid int // the server under test, 0 for engine-level steps
}

func (s *suite) say(format string, args ...any) {
	fmt.Fprintf(s.log, "bench: "+format+"\n", args...)
}

// newSuite makes a suite with a temporary directory and a private redis-server in it
// (no persistence); cleanup stops the server and removes the directory.
func newSuite(ctx context.Context, f Options, prefix string) (*suite, string, *redisserver.Server, func(), error) {
	s := &suite{ctx: ctx, rep: &loadgen.Report{Machine: machine()}, progress: f.Progress, log: f.Log}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, "", nil, nil, err
	}
	srv, err := redisserver.Start(dir, "--save", "", "--appendonly", "no")
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", nil, nil, err
	}
	s.redisPid = srv.Pid()
	return s, dir, srv, func() { srv.Stop(); os.RemoveAll(dir) }, nil
}

// measure runs one step and charges the CPU that each process used meanwhile to it:
// this process (the driver), finished children (wrk, redis-benchmark), the server
// and Redis.
func (s *suite) measure(step func() (*loadgen.Result, error)) error {
	self0, _ := loadgen.CPUTime(-1)
	kids0 := childrenCPU()
	srv0, _ := cpuOf(s.serverPid)
	red0, _ := cpuOf(s.redisPid)
	r, err := step()
	if err != nil {
		return err
	}
	self1, _ := loadgen.CPUTime(-1)
	srv1, _ := cpuOf(s.serverPid)
	red1, _ := cpuOf(s.redisPid)
	r.SetCPU(self1-self0+childrenCPU()-kids0, srv1-srv0, red1-red0)
	s.rep.Results = append(s.rep.Results, r)
	if s.progress == nil {
		s.say("%s %s: %.0f attempts/s, %d ok, %d refused, %d errors", r.Target, r.Scenario,
			r.AttemptsPerSecond, r.Successes, r.Refused(), r.Failed())
	}
	return nil
}

func (s *suite) run(t loadgen.Target, cfg loadgen.Config) error {
	return s.measure(func() (*loadgen.Result, error) {
		r, err := loadgen.Run(s.ctx, t, cfg, s.progress)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", t.Name(), cfg.Scenario, err)
		}
		return r, nil
	})
}

func cpuOf(pid int) (time.Duration, error) {
	if pid <= 0 {
		return 0, nil
	}
	return loadgen.CPUTime(pid)
}

func childrenCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Run is `flashstock bench -suite` (make bench): every figure docs/BENCHMARKS.md
// reports, from one run, so that each ratio compares figures taken minutes apart on the
// same machine. It starts its own redis-server and its own server processes (the running
// executable, which must be flashstock, as `serve`, on that Redis with embedded
// FerretDB) and needs redis-benchmark and wrk on PATH.
func Run(ctx context.Context, f Options) (*loadgen.Report, error) {
	progress := f.Progress
	s, dir, srv, cleanup, err := newSuite(ctx, f, "flashstock-bench-")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	rep := s.rep
	rdb, stop, err := redisClient("redis://"+srv.Addr, f.Concurrency)
	if err != nil {
		return nil, err
	}
	defer stop()
	timed := func(sc string, d time.Duration) loadgen.Config {
		return loadgen.Config{Scenario: sc, Duration: d, Concurrency: f.Concurrency, Users: f.Users}
	}
	counted := func(sc string, buyers int) loadgen.Config {
		return loadgen.Config{Scenario: sc, Buyers: buyers, Concurrency: f.Concurrency, Users: f.Users}
	}
	short := f.WrkDuration / 2

	// 1. The ceilings, the seed-style baseline and the engine: same Redis, same driver.
	s.say("redis-server %s on %s: engine-level steps", redisVersion(), srv.Addr)
	for _, pipeline := range []int{1, 16} {
		requests := int(short.Seconds() * 40_000 * float64(pipeline/8+1))
		if err := s.measure(func() (*loadgen.Result, error) {
			return loadgen.RedisBenchmark(ctx, rdb, f.Concurrency, requests, pipeline)
		}); err != nil {
			return rep, err
		}
	}
	inv := engine.NewRedis(rdb, engine.Options{})
	defer inv.Close()
	for _, step := range []struct {
		t   loadgen.Target
		cfg loadgen.Config
	}{
		{loadgen.Ceiling{RDB: rdb}, timed(loadgen.Hot, short)},
		{loadgen.SeedStyle{RDB: rdb}, timed(loadgen.Hot, short)},
		{loadgen.Engine{Inv: inv}, timed(loadgen.Hot, short)},
		{loadgen.Engine{Inv: inv}, counted(loadgen.Cart, 100_000)},
		{loadgen.Engine{Inv: inv}, counted(loadgen.Holds, 50_000)},
		{loadgen.Engine{Inv: inv}, counted(loadgen.Storm, 200_000)},
	} {
		if err := s.run(step.t, step.cfg); err != nil {
			return rep, err
		}
	}

	// 2. The server over HTTP: this driver, then wrk, on the same server.
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	env := map[string]string{"REDIS_URL": "redis://" + srv.Addr, "JWT_SECRET": hex.EncodeToString(secret),
		"RATE_LIMIT_PER_MINUTE": "0", "ROLE": "api", "LOG_LEVEL": "warn"}
	server, h, err := s.startServer(filepath.Join(dir, "server"), env, f)
	if err != nil {
		return rep, err
	}
	defer server.stop()
	defer h.Close()
	s.say("server (ROLE=api, RATE_LIMIT_PER_MINUTE=0) on %s", server.url)
	if err := s.run(h, timed(loadgen.Hot, f.WrkDuration)); err != nil {
		return rep, err
	}
	s.say("wrk -t2 -c%d -d%s on the same server", f.Concurrency, f.WrkDuration)
	if err := s.measure(func() (*loadgen.Result, error) {
		return h.Wrk(ctx, loadgen.WrkConfig{Threads: 2, Conns: f.Concurrency, Duration: f.WrkDuration})
	}); err != nil {
		return rep, err
	}
	if err := s.baselines(dir, env, f); err != nil {
		return rep, err
	}
	for _, cfg := range []loadgen.Config{counted(loadgen.Cart, 40_000), counted(loadgen.Holds, 20_000), timed(loadgen.Storm, short)} {
		if err := s.run(h, cfg); err != nil {
			return rep, err
		}
	}

	// 3. The sold-out storm again with SOLDOUT_CACHE_MS on, from a second server.
	env["SOLDOUT_CACHE_MS"] = "50"
	cached, hc, err := s.startServer(filepath.Join(dir, "server-cached"), env, f)
	if err != nil {
		return rep, err
	}
	// Requests with idempotency keys always ask Redis (a retry must get its order
	// back), so the marks are measured with keys, as every other run, and without.
	err = s.run(renamed{hc, "http soldout-cache"}, timed(loadgen.Storm, short))
	if err == nil {
		keyless := timed(loadgen.Storm, short)
		keyless.NoKeys = true
		err = s.run(renamed{hc, "http soldout-cache"}, keyless)
	}
	hc.Close()
	cached.stop()
	s.serverPid = server.pid()
	if err != nil {
		return rep, err
	}

	// 4. A sustained run at a fixed rate, with the server's memory sampled.
	if f.Soak > 0 {
		s.say("soak: %.0f checkouts/s for %s, server memory sampled every 10 s", f.SoakRate, f.Soak)
		soak, err := h.RunSoak(ctx, loadgen.Config{Scenario: loadgen.Hot, Rate: f.SoakRate, Duration: f.Soak,
			Concurrency: f.Concurrency, Users: f.Users}, 10*time.Second, progress)
		if err != nil {
			return rep, err
		}
		rep.Soak = soak
	}
	addRatios(rep)
	return rep, nil
}

// baselines measures the HTTP baselines of package bare with wrk exactly as the
// server's wrk run is measured (same threads, connections, duration, request script,
// secret and Redis), each in its own process as the server is (this binary, `bench
// -serve-baseline`): the bare handler, then Fiber's hello world. The server under test
// stays up, idle, meanwhile.
func (s *suite) baselines(dir string, env map[string]string, f Options) error {
	defer func(pid int) { s.serverPid = pid }(s.serverPid)
	for _, b := range []struct {
		baseline, row string
		noStock       bool
	}{{"bare", "bare", false}, {"hello", "fiber-hello", true}} {
		c, err := startChild(s.ctx, filepath.Join(dir, b.baseline), env, "bench", "-serve-baseline", b.baseline)
		if err != nil {
			return fmt.Errorf("%s: %w", b.row, err)
		}
		s.serverPid = c.pid()
		s.say("wrk -t2 -c%d -d%s on the %s baseline (%s)", f.Concurrency, f.WrkDuration, b.row, c.url)
		err = s.measure(func() (*loadgen.Result, error) {
			h, err := loadgen.NewHTTP(s.ctx, c.url, loadgen.HTTPOptions{Secret: []byte(env["JWT_SECRET"]), Users: f.Users, Conns: f.Concurrency})
			if err != nil {
				return nil, err
			}
			defer h.Close()
			return h.Wrk(s.ctx, loadgen.WrkConfig{Threads: 2, Conns: f.Concurrency, Duration: f.WrkDuration, Target: b.row, NoStock: b.noStock})
		})
		c.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", b.row, err)
		}
	}
	return nil
}

// startServer starts a server with env and connects a driver to it; the server's
// process is the one measure charges from then on.
func (s *suite) startServer(dataDir string, env map[string]string, f Options) (*child, *loadgen.HTTP, error) {
	c, err := startServer(s.ctx, dataDir, env)
	if err != nil {
		return nil, nil, err
	}
	h, err := loadgen.NewHTTP(s.ctx, c.url, loadgen.HTTPOptions{Secret: []byte(env["JWT_SECRET"]), Users: f.Users, Conns: f.Concurrency})
	if err != nil {
		c.stop()
		return nil, nil, err
	}
	s.serverPid = c.pid()
	return c, h, nil
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
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return "?"
}
