package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/flashstock/flashstock/api"
	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/embedded"
	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/metrics"
	"github.com/flashstock/flashstock/store"
	stocksync "github.com/flashstock/flashstock/sync"
	"github.com/flashstock/flashstock/webhook"
)

// deps are the opened dependencies; close releases them in reverse order.
type deps struct {
	m       *metrics.Metrics
	rdb     redis.UniversalClient
	inv     *engine.Redis
	st      *store.Store
	closers []func()
}

func (d *deps) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// open connects to Redis and MongoDB, or starts the embedded ones.
func open(ctx context.Context, cfg Config, log *slog.Logger, logOut io.Writer) (*deps, error) {
	d := &deps{m: metrics.New()}
	switch {
	case len(cfg.RedisClusterAddrs) > 0:
		// MaxRetries -1 and the slot map reloaded when a node cannot be dialled; the
		// engine sends its scripts through internal/clusterscript (at most once each).
		cc := rediscluster.NewClientWith(cfg.RedisClusterAddrs, cfg.RedisCluster)
		// Scripts go through the node clients, which a hook on the cluster client
		// does not see: the metrics hook goes on every node client instead.
		hook := d.m.RedisHook()
		cc.OnNewNode(func(n *redis.Client) { n.AddHook(hook) })
		d.rdb = cc
		if cfg.WaitReplicas == 0 {
			log.Warn("Redis Cluster without REDIS_WAIT_REPLICAS: replication is asynchronous, so a master's failover can lose "+
				"the stock changes and orders it acknowledged in its last moments (measured: 0-2 per failover under load, "+
				"hundreds with a lagging replica), and leave cross-partition orders partly sold (their line in the failed "+
				"partition lost, its units sellable again); "+
				"set REDIS_WAIT_REPLICAS=1 to acknowledge only what a replica holds", "partitions", cfg.Partitions)
		} else {
			log.Info("Redis Cluster: every stock change is acknowledged once replicas confirm it (WAIT)",
				"replicas", cfg.WaitReplicas, "timeoutMs", cfg.WaitTimeout.Milliseconds(), "partitions", cfg.Partitions)
		}
	case cfg.RedisURL == "":
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("embedded redis: %w", err)
		}
		d.closers = append(d.closers, mr.Close)
		// engine.NoRetries: MaxRetries -1, a lost reply is never re-sent.
		d.rdb = redis.NewClient(engine.NoRetries(&redis.Options{Addr: mr.Addr(), PoolSize: 64}))
		log.Info("embedded Redis (miniredis) started in-process; it keeps nothing across restarts, live stock is rebuilt from MongoDB", "addr", mr.Addr())
	default:
		o, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, usageError{fmt.Sprintf("REDIS_URL: %v", err)}
		}
		o.PoolSize = max(o.PoolSize, 128)
		// engine.NoRetries: MaxRetries -1, a lost reply is never re-sent.
		d.rdb = redis.NewClient(engine.NoRetries(o))
	}
	if len(cfg.RedisClusterAddrs) == 0 {
		d.rdb.AddHook(d.m.RedisHook())
	}
	d.closers = append(d.closers, func() { _ = d.rdb.Close() })
	if err := d.rdb.Ping(ctx).Err(); err != nil {
		d.close()
		return nil, fmt.Errorf("redis: %w", err)
	}

	uri := cfg.MongoURI
	if uri == "" {
		dir := filepath.Join(cfg.DataDir, "mongo")
		// FerretDB logs every connection at info; only its warnings matter here.
		flog := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
		m, err := embedded.StartMongo(ctx, dir, "127.0.0.1:0", flog.With("component", "ferretdb"))
		if err != nil {
			d.close()
			return nil, err
		}
		d.closers = append(d.closers, func() { _ = m.Close() })
		uri = m.URI
		log.Info("embedded MongoDB-compatible server (FerretDB on SQLite) started", "dir", dir, "uri", uri)
	}
	mc, err := mongo.Connect(ctx, options.Client().ApplyURI(uri).SetServerSelectionTimeout(5*time.Second).
		SetMonitor(d.m.MongoMonitor()))
	if err != nil {
		d.close()
		return nil, fmt.Errorf("mongodb: %w", err)
	}
	d.closers = append(d.closers, func() { _ = mc.Disconnect(context.WithoutCancel(ctx)) })
	d.st = store.New(mc.Database(cfg.MongoDatabase))
	if err := d.st.Ping(ctx); err != nil {
		d.close()
		return nil, fmt.Errorf("mongodb: %w", err)
	}
	if err := d.st.EnsureIndexes(ctx); err != nil {
		d.close()
		return nil, err
	}
	d.inv = engine.NewRedis(d.rdb, engine.Options{SoldOutFor: cfg.SoldOutFor, QueuePassTTL: cfg.QueuePassTTL,
		WaitReplicas: cfg.WaitReplicas, WaitTimeout: cfg.WaitTimeout, Partitions: cfg.Partitions})
	d.closers = append(d.closers, d.inv.Close)
	if err := d.inv.LoadScripts(ctx); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func serve(ctx context.Context, cfg Config, stdout io.Writer) error {
	log := newLogger(cfg, stdout)
	if cfg.Embedded() && cfg.JWTSecret == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		cfg.JWTSecret = hex.EncodeToString(b)
		log.Warn("generated a JWT secret for this run (embedded mode): tokens die with the process; set JWT_SECRET to keep them")
	}
	log.Info("starting flashstock", "role", cfg.Role, "host", cfg.Host, "port", cfg.Port, "redis", redact(cfg.RedisURL),
		"mongodb", redact(cfg.MongoURI), "database", cfg.MongoDatabase, "jwt_secret", masked(cfg.JWTSecret),
		"rate_limit_per_minute", cfg.RateLimitPerMinute, "login_limit_per_minute", cfg.LoginLimitPerMinute,
		"login_address_limit_per_minute", cfg.LoginAddressLimitPerMinute, "trusted_proxies", len(cfg.TrustedProxies))
	if cfg.SoldOutFor > 0 {
		log.Info("sold-out marks on: a refusal may lag returned stock by up to SOLDOUT_CACHE_MS", "ms", cfg.SoldOutFor.Milliseconds())
	}
	if cfg.PprofAddr != "" {
		if cfg.PprofAllowRemote {
			log.Warn("pprof may listen beyond loopback (PPROF_ALLOW_REMOTE=true): anyone who reaches it can read memory profiles and the command line", "addr", cfg.PprofAddr)
		}
		go servePprof(cfg.PprofAddr, log)
	}
	start := time.Now()
	d, err := open(ctx, cfg, log, stdout)
	if err != nil {
		return err
	}
	defer d.close()

	// Live stock first: Redis may have lost what MongoDB remembers.
	rebuilt, err := stocksync.RebuildAtStart(ctx, d.inv, d.st, log)
	if err != nil {
		return err
	}
	if !cfg.Embedded() {
		if err := refusePublishedAdmin(ctx, d); err != nil {
			return usageError{"refusing to start: " + err.Error()}
		}
	}
	if cfg.SeedDemo {
		if err := seedDemo(ctx, d, log, cfg.DemoAdminPassword); err != nil {
			return err
		}
	}
	rc := &stocksync.Reconciler{Inv: d.inv, Store: d.st, Logger: log}
	hooks, hookMetrics, err := openWebhooks(ctx, cfg, d, log)
	if err != nil {
		return err
	}
	var trimBehind []string
	if hooks != nil {
		trimBehind = []string{stocksync.WebhookGroup} // the outbox keeps what the feeder has not taken
	}
	syncer := stocksync.NewSyncer(d.inv, d.st, stocksync.SyncerOptions{Logger: log, TrimBehind: trimBehind})

	var wg sync.WaitGroup
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer func() { stopWork(); wg.Wait() }()
	if cfg.Role == "all" || cfg.Role == "worker" || cfg.Role == "sync" {
		wg.Go(func() {
			if err := syncer.Run(workCtx); err != nil {
				log.Error("syncer stopped", "err", err)
			}
		})
	}
	if cfg.Role == "all" || cfg.Role == "worker" {
		jobs := stocksync.StandardJobs(d.inv, d.st, syncer, rc, cfg.Specs, func(n int) { d.m.HoldsExpired.Add(float64(n)) })
		sch, err := stocksync.NewScheduler(d.rdb, d.inv.Keys(), log, jobs...)
		if err != nil {
			return usageError{err.Error()}
		}
		wg.Go(func() { sch.Start(workCtx) })
		if hooks != nil {
			feeder := stocksync.NewFeeder(d.inv, hooks, log)
			feeder.LowStock = int64(cfg.LowStockThreshold)
			wg.Go(func() {
				if err := feeder.Run(workCtx); err != nil {
					log.Error("webhook feeder stopped", "err", err)
				}
			})
			worker := webhook.NewWorker(hooks, webhook.WorkerConfig{Metrics: hookMetrics, Logger: log.With("component", "webhooks")})
			wg.Go(func() {
				if err := worker.Run(workCtx); err != nil {
					log.Error("webhook worker stopped", "err", err)
				}
			})
		}
	}
	if cfg.Role != "all" && cfg.Role != "api" {
		log.Info("worker running", "startup_ms", time.Since(start).Milliseconds())
		<-ctx.Done()
		log.Info("shutting down: draining the syncer")
		return nil
	}

	var redisMemory func(context.Context) (int64, int64, error)
	if cfg.RedisURL != "" { // miniredis has no memory figures
		redisMemory = metrics.RedisMemoryFrom(d.rdb)
	}
	d.m.RegisterState(metrics.State{
		RedisMemory: redisMemory,
		Levels:      d.inv.AvailableAll,
		QueueLengths: func(ctx context.Context) (map[string]int64, error) {
			skus, err := d.inv.SKUs(ctx)
			if err != nil {
				return nil, err
			}
			return d.inv.QueueLengths(ctx, skus)
		},
		ActiveHolds: d.inv.ActiveHolds,
		OutboxLag: func(ctx context.Context) (int64, error) {
			lag, err := syncer.Lag(ctx)
			return lag.Total(), err
		},
		PartitionLag: func(ctx context.Context) ([]int64, error) {
			lags, err := syncer.PartitionLags(ctx)
			out := make([]int64, len(lags))
			for i, l := range lags {
				out[i] = l.Total()
			}
			return out, err
		},
		ClusterOK:          clusterOK(d.rdb),
		SyncerErrors:       syncer.Failures,
		SyncConflicts:      syncer.Conflicts,
		DeadLetterFailures: syncer.DeadLetterFailures,
		Rollbacks:          func() int64 { return int64(rebuilt.Restorations()) + rc.RolledBack() },
		LowStock:           int64(cfg.LowStockThreshold),
		Logger:             log,
	})
	app := api.New(api.Config{JWTSecret: []byte(cfg.JWTSecret), JWTIssuer: cfg.JWTIssuer,
		RateLimitPerMinute: cfg.RateLimitPerMinute, LoginLimit: cfg.LoginLimitPerMinute,
		LoginAddressLimit: cfg.LoginAddressLimitPerMinute, TrustedProxies: cfg.TrustedProxies,
		LowStockThreshold: int64(cfg.LowStockThreshold)}, api.Deps{Inv: d.inv, Store: d.st, Reconciler: rc, Logger: log,
		Metrics: d.m, Webhooks: hooks, Lag: func(ctx context.Context) (int64, error) {
			l, err := syncer.Lag(ctx)
			return l.Total(), err
		}}) // /readyz checks Redis, MongoDB and the scripts
	ln, err := net.Listen("tcp", listenAddr(cfg))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	served := make(chan error, 1)
	go func() { served <- app.Listener(ln) }()
	log.Info("flashstock ready", "addr", ln.Addr().String(), "startup_ms", time.Since(start).Milliseconds(),
		"swagger_ui", "/api", "openapi", "/api/openapi.json", "metrics", "/metrics", "health", "/healthz", "ready", "/readyz")

	select {
	case err := <-served:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining requests, then the syncer")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := app.ShutdownWithContext(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	return nil
}

// listenAddr is where the API listens: HOST (127.0.0.1 by default in the embedded
// mode, all interfaces otherwise) and PORT.
func listenAddr(cfg Config) string { return net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)) }

var errDrift = errors.New("drift found")

// reconcile runs one reconciliation and prints its report.
func reconcile(ctx context.Context, cfg Config, stdout io.Writer, repair bool) error {
	if cfg.Embedded() {
		return usageError{"reconcile needs REDIS_URL and MONGODB_URI: the embedded stores live inside the serve process (use POST /api/v1/admin/reconcile there)"}
	}
	log := newLogger(cfg, io.Discard)
	d, err := open(ctx, cfg, log, io.Discard)
	if err != nil {
		return err
	}
	defer d.close()
	rep, err := (&stocksync.Reconciler{Inv: d.inv, Store: d.st, Logger: log}).Run(ctx, repair)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return err
	}
	if !rep.Clean() {
		return errDrift
	}
	return nil
}

func seedOnly(ctx context.Context, cfg Config, stdout io.Writer) error {
	if cfg.Embedded() {
		return usageError{"seed needs REDIS_URL and MONGODB_URI; the embedded mode seeds itself (SEED_DEMO)"}
	}
	if cfg.DemoAdminPassword == "" {
		return usageError{"seed needs DEMO_ADMIN_PASSWORD (12 to 72 bytes): outside the embedded mode the demo admin never gets the published password"}
	}
	log := newLogger(cfg, stdout)
	d, err := open(ctx, cfg, log, stdout)
	if err != nil {
		return err
	}
	defer d.close()
	return seedDemo(ctx, d, log, cfg.DemoAdminPassword)
}

// redact hides the password in a URL for logging.
func redact(raw string) string {
	if raw == "" {
		return "(embedded)"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// servePprof serves the runtime profiles (net/http/pprof) for `go tool pprof`, on their
// own listener so that they are never exposed with the API.
func servePprof(addr string, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("pprof listening", "addr", addr)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Error("pprof", "err", err)
	}
}

// openWebhooks builds the webhook service, or nil when webhooks are off (no
// WEBHOOK_SECRET_KEY outside the embedded mode). The embedded mode keeps its own key in
// DATA_DIR/webhook.key, made on first start, so subscriptions' secrets survive restarts.
func openWebhooks(ctx context.Context, cfg Config, d *deps, log *slog.Logger) (*webhook.Service, *webhook.Metrics, error) {
	if !cfg.Webhooks {
		log.Info("webhooks off: set WEBHOOK_SECRET_KEY to turn them on")
		return nil, nil, nil
	}
	key := ""
	if cfg.webhookEnv("WEBHOOK_SECRET_KEY") == "" {
		var err error
		if key, err = embeddedWebhookKey(cfg.DataDir); err != nil {
			return nil, nil, err
		}
	}
	wc, err := cfg.webhookConfig(key)
	if err != nil {
		return nil, nil, usageError{err.Error()}
	}
	svc, err := webhook.New(d.st.Database(), wc)
	if err != nil {
		return nil, nil, err
	}
	if err := svc.EnsureIndexes(ctx); err != nil {
		return nil, nil, err
	}
	if cfg.webhookEnv("WEBHOOK_SECRET_KEYS_PREVIOUS") != "" {
		// A key rotation: seal every secret under the current key, so the old one can go.
		n, err := svc.Rewrap(ctx)
		if err != nil {
			return nil, nil, err
		}
		log.Info("webhook secrets sealed under the current key", "subscriptions", n)
	}
	m, err := webhook.NewMetrics(d.m.Registry, svc)
	if err != nil {
		return nil, nil, err
	}
	return svc, m, nil
}

// embeddedWebhookKey reads the embedded mode's webhook key from dir, making it (32
// random bytes, hex, mode 0600) on first use.
func embeddedWebhookKey(dir string) (string, error) {
	path := filepath.Join(dir, "webhook.key")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("webhook key: %w", err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	key := hex.EncodeToString(b)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("webhook key: %w", err)
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("webhook key: %w", err)
	}
	return key, nil
}

// clusterOK is the cluster check of /metrics: every master reports cluster_state:ok
// (nil when rdb is not a cluster client).
func clusterOK(rdb redis.UniversalClient) func(context.Context) error {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return nil
	}
	return func(ctx context.Context) error {
		return cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			info, err := n.ClusterInfo(ctx).Result()
			if err == nil && !strings.Contains(info, "cluster_state:ok") {
				err = fmt.Errorf("%s: cluster state is not ok", n.Options().Addr)
			}
			return err
		})
	}
}
