// Package api is flashstock's HTTP interface (contract v1): a Fiber app whose handlers
// stay thin and leave the work to engine (live stock) and store (history).
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/flashstock/flashstock/api/codes"
	"github.com/flashstock/flashstock/auth"
	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/metrics"
	"github.com/flashstock/flashstock/store"
	stocksync "github.com/flashstock/flashstock/sync"
	"github.com/flashstock/flashstock/webhook"
)

// Config holds the API's settings.
type Config struct {
	JWTSecret []byte
	JWTIssuer string
	TokenTTL  time.Duration // default 1h
	// RateLimitPerMinute caps checkout, hold and commit requests per user per minute,
	// across every replica (0 disables).
	RateLimitPerMinute int
	// LoginLimit caps failed logins (and registrations) per email, and
	// LoginAddressLimit login and register requests per client address, per
	// LoginWindow (default one minute), across every replica; 0 disables either. Over
	// them: 429 rate_limited with Retry-After.
	LoginLimit        int
	LoginAddressLimit int
	LoginWindow       time.Duration
	// TrustedProxies are the proxies whose X-Forwarded-For names the client (for the
	// per-address limit); without them the peer's address is the client.
	TrustedProxies []netip.Prefix
	// RequestTimeout bounds each request (default 10 s).
	RequestTimeout time.Duration
	// CartTTL is how long an untouched cart lives (default 7 days).
	CartTTL time.Duration
	// LowStockThreshold is the available level at or below which the live view shows
	// inventory.low_stock (LOW_STOCK_THRESHOLD; 0: only sold_out).
	LowStockThreshold int64
}

// Deps are what the API runs on.
type Deps struct {
	Inv        *engine.Redis
	Store      *store.Store
	Reconciler *stocksync.Reconciler
	Logger     *slog.Logger
	// Metrics, if set, is instrumented and served at /metrics.
	Metrics *metrics.Metrics
	// Ready, if set, reports each dependency's readiness: nil when it answers, else
	// why not. /readyz shows only a status word per dependency ("ok", "unavailable",
	// "timeout", "unknown"); the reasons go to the log. Without it, /readyz checks
	// Redis, MongoDB and the scripts itself (see checkDependencies).
	Ready func(ctx context.Context) map[string]error
	Now   func() time.Time
	// Webhooks, if set, serves the admin webhook routes; without it they answer 503.
	Webhooks *webhook.Service
	// Lag, if set, is how many outbox entries MongoDB is behind (the syncer's lag), shown
	// in the live view's snapshots; without it their syncLag is null.
	Lag func(ctx context.Context) (int64, error)
}

type server struct {
	webhooks *webhook.Service
	cfg      Config
	inv      *engine.Redis
	rdb      redis.UniversalClient
	store    *store.Store
	rc       *stocksync.Reconciler
	log      *slog.Logger
	ready    func(ctx context.Context) map[string]error
	now      func() time.Time
	reqs     atomic.Uint64
	m        *metrics.Metrics
	// idPrefix starts every request id this process makes; a counter ends it.
	idPrefix string
	tokens   *auth.Verifier
	seriesMu sync.RWMutex
	seriesOf map[seriesKey]*series
	// live counts checkout outcomes for the live view; hub serves it.
	live liveCounters
	hub  *liveHub
}

const (
	localPrincipal = "principal"
	localRequestID = "requestID"
	localLogger    = "logger"
	bodyLimit      = 64 * 1024
	// writeTimeout bounds writing a response; the live view's stream extends it before
	// each event.
	writeTimeout = 30 * time.Second
)

// New builds the app with every route of the contract.
func New(cfg Config, d Deps) *fiber.App {
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = time.Hour
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.LoginWindow <= 0 {
		cfg.LoginWindow = defaultLoginWindow
	}
	if cfg.CartTTL <= 0 {
		cfg.CartTTL = 7 * 24 * time.Hour
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &server{cfg: cfg, inv: d.Inv, rdb: d.Inv.Client(), store: d.Store, rc: d.Reconciler, log: d.Logger,
		webhooks: d.Webhooks, ready: d.Ready, now: d.Now, m: d.Metrics, idPrefix: engine.NewShortID() + "-", tokens: auth.NewVerifier(cfg.JWTSecret, cfg.JWTIssuer, 1<<16),
		seriesOf: map[seriesKey]*series{}}
	s.hub = newLiveHub(d.Inv, d.Store, d.Lag, &s.live, d.Logger, d.Now)
	s.hub.lowStock = cfg.LowStockThreshold
	app := fiber.New(fiber.Config{
		AppName:               "flashstock",
		BodyLimit:             bodyLimit,
		DisableStartupMessage: true,
		ErrorHandler:          s.handleError,
		// goccy/go-json: encoding/json's behaviour, about twice as fast (docs/BENCHMARKS.md).
		JSONEncoder:  gojson.Marshal,
		JSONDecoder:  gojson.Unmarshal,
		ReadTimeout:  30 * time.Second,
		WriteTimeout: writeTimeout,
		IdleTimeout:  2 * time.Minute,
	})
	app.Hooks().OnShutdown(s.hub.stop)
	app.Use(s.requestContext)
	// A panic in a handler becomes an internal error for that request, not a crash.
	app.Use(recover.New())

	app.Get("/healthz", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	app.Get("/readyz", s.readyz)
	if d.Metrics != nil {
		h := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(d.Metrics.Registry, promhttp.HandlerOpts{}))
		app.Get("/metrics", func(c *fiber.Ctx) error { h(c.Context()); return nil })
	}

	mountDocs(app)
	app.Get("/dashboard", dashboard)

	v1 := app.Group("/api/v1")
	v1.Post("/auth/register", s.register)
	v1.Post("/auth/login", s.login)

	authed := v1.Group("", s.authenticate)
	authed.Get("/auth/me", s.me)

	authed.Get("/products", s.listProducts)
	authed.Get("/products/:sku", s.getProduct)
	authed.Post("/products", adminOnly, s.createProduct)
	authed.Patch("/products/:sku", adminOnly, s.patchProduct)
	authed.Get("/inventory/:sku", s.getLevel)
	authed.Post("/inventory/:sku/adjustments", adminOnly, s.adjust)
	authed.Put("/inventory/:sku", adminOnly, s.setLevel)

	authed.Get("/cart", s.getCart)
	authed.Put("/cart/items/:sku", s.putCartItem)
	authed.Delete("/cart/items/:sku", s.deleteCartItem)
	authed.Delete("/cart", s.clearCart)

	// Checkouts, holds and commits count against the per-user rate limit inside their
	// engine call, on one counter (engine.RateLimitKey).
	authed.Post("/queue/:sku", s.joinQueue)
	authed.Get("/queue/:sku", s.queuePosition)
	authed.Post("/checkout", s.checkout)
	authed.Post("/holds", s.createHold)
	authed.Get("/holds/:id", s.getHold)
	authed.Post("/holds/:id/commit", s.commitHold)
	authed.Delete("/holds/:id", s.releaseHold)
	authed.Get("/orders", s.listOrders)
	authed.Get("/orders/:id", s.getOrder)
	authed.Post("/orders/:id/cancel", s.cancelOrder)

	authed.Post("/carts/bulk-checkout", adminOnly, s.bulkCheckout)
	authed.Post("/admin/reconcile", adminOnly, s.reconcileNow)
	authed.Get("/admin/reconcile/last", adminOnly, s.lastReconcile)
	authed.Post("/admin/webhooks", adminOnly, s.createWebhook)
	authed.Get("/admin/webhooks", adminOnly, s.listWebhooks)
	authed.Delete("/admin/webhooks/:id", adminOnly, s.deleteWebhook)
	authed.Get("/admin/webhooks/:id/deliveries", adminOnly, s.webhookDeliveries)
	authed.Get("/admin/live", adminOnly, s.streamLive)

	app.Use(func(*fiber.Ctx) error { return errNotFound })
	return app
}

// requestContext gives each request an id (the caller's X-Request-Id if sane), a
// deadline carried by c.UserContext(), and one log line.
func (s *server) requestContext(c *fiber.Ctx) error {
	id := c.Get(fiber.HeaderXRequestID)
	if id == "" || len(id) > 64 || !engine.ValidKey(id) {
		id = s.idPrefix + strconv.FormatUint(s.reqs.Add(1), 36)
	} else {
		id = strings.Clone(id) // c.Get points into a buffer fasthttp reuses
	}
	c.Locals(localRequestID, id)
	c.Set(fiber.HeaderXRequestID, id)
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.RequestTimeout)
	defer cancel()
	c.SetUserContext(ctx)
	start := time.Now()
	outcome := "ok"
	if err := c.Next(); err != nil {
		outcome = s.writeProblem(c, err)
	}
	elapsed := time.Since(start)
	s.observe(c, outcome, elapsed)
	if op := operations[c.Method()+" "+c.Route().Path]; op != "" && op != "simulation" {
		s.live.count(outcome) // the simulation counts its buyers itself
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		reqLog(c, s.log).Debug("request", "method", c.Method(), "path", c.Path(),
			"status", c.Response().StatusCode(), "duration_ms", elapsed.Milliseconds())
	}
	return nil
}

// operations are the routes whose outcomes flashstock_checkout_attempts_total counts.
var operations = map[string]string{
	"POST /api/v1/checkout":            "checkout",
	"POST /api/v1/holds":               "hold",
	"POST /api/v1/holds/:id/commit":    "commit",
	"POST /api/v1/carts/bulk-checkout": "simulation",
}

// observe counts a finished request; outcome is "ok" or the problem's code.
func (s *server) observe(c *fiber.Ctx, outcome string, elapsed time.Duration) {
	if s.m == nil {
		return
	}
	s.series(c.Method(), c.Route().Path, c.Response().StatusCode(), outcome).observe(elapsed)
}

// seriesKey names the metric series one request updates. Looking it up with Fiber's
// strings, which point into reused buffers, is safe; storing them is not.
type seriesKey struct {
	method, route string
	status        int
	outcome       string
}

// series are the metric children one kind of request updates, resolved once: label
// lookups would otherwise hash and copy the labels on every request.
type series struct {
	latency   prometheus.Observer
	checkouts prometheus.Counter // nil for routes that are not checkout operations
	conflicts prometheus.Counter // nil unless the outcome is a stock conflict
}

func (x *series) observe(elapsed time.Duration) {
	x.latency.Observe(elapsed.Seconds())
	if x.checkouts != nil {
		x.checkouts.Inc()
	}
	if x.conflicts != nil {
		x.conflicts.Inc()
	}
}

func (s *server) series(method, route string, status int, outcome string) *series {
	k := seriesKey{method, route, status, outcome}
	s.seriesMu.RLock()
	x, ok := s.seriesOf[k]
	s.seriesMu.RUnlock()
	if ok {
		return x
	}
	k.method, k.route, k.outcome = strings.Clone(method), strings.Clone(route), strings.Clone(outcome)
	x = &series{latency: s.m.HTTP.WithLabelValues(k.method, k.route, strconv.Itoa(status))}
	if op := operations[k.method+" "+k.route]; op != "" {
		x.checkouts = s.m.Checkouts.WithLabelValues(op, k.outcome)
	}
	switch k.outcome {
	case codes.OutOfStock, codes.InsufficientStock, codes.VersionConflict:
		x.conflicts = s.m.Conflicts.WithLabelValues(k.outcome)
	}
	s.seriesMu.Lock()
	if len(s.seriesOf) < maxSeries {
		s.seriesOf[k] = x
	}
	s.seriesMu.Unlock()
	return x
}

// maxSeries bounds the cache of series; routes × statuses × outcomes stay far below.
const maxSeries = 4096

// handleError is Fiber's error handler, for errors raised outside requestContext.
func (s *server) handleError(c *fiber.Ctx, err error) error {
	s.writeProblem(c, err)
	return nil
}

// writeProblem answers with the problem err maps to and returns its code.
func (s *server) writeProblem(c *fiber.Ctx, err error) string {
	id, _ := c.Locals(localRequestID).(string)
	p := toProblem(err, func() *slog.Logger { return reqLog(c, s.log) }, id)
	if p.RetryAfter > 0 && c.GetRespHeader(fiber.HeaderRetryAfter) == "" {
		c.Set(fiber.HeaderRetryAfter, strconv.FormatInt(p.RetryAfter, 10))
	}
	c.Set(fiber.HeaderContentType, "application/problem+json")
	c.Status(p.Status)
	var buf [512]byte
	c.Response().ResetBody()
	c.Response().AppendBody(appendProblem(buf[:0], &p))
	return p.Code
}

// readyz answers 200 when every dependency answers, else 503, with one status word per
// dependency. Errors stay in the log: they name addresses and driver internals.
func (s *server) readyz(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), readyTimeout)
	defer cancel()
	var errs map[string]error
	if s.ready != nil {
		errs = s.ready(ctx)
	} else {
		errs = s.checkDependencies(ctx)
	}
	ok, checks := true, make(map[string]string, len(errs))
	for name, err := range errs {
		word := readinessWord(err)
		checks[name] = word
		if word != "ok" {
			ok = false
			reqLog(c, s.log).Warn("not ready", "dependency", name, "status", word, "err", err)
		}
	}
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	return c.Status(status).JSON(fiber.Map{"ready": ok, "checks": checks})
}

// readyTimeout bounds a readiness check: a probe that hangs is as bad as a failed one.
const readyTimeout = 3 * time.Second

// ErrNotChecked marks a readiness check skipped because one it depends on failed.
var ErrNotChecked = errors.New("not checked: a dependency it needs is down")

// readinessWord is what /readyz shows for a check's error.
func readinessWord(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNotChecked):
		return "unknown"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "unavailable"
	}
}

// checkDependencies pings Redis and MongoDB and makes sure the scripts are loaded
// (checked only when Redis answers).
func (s *server) checkDependencies(ctx context.Context) map[string]error {
	out := map[string]error{"redis": s.rdb.Ping(ctx).Err(), "mongodb": s.store.Ping(ctx), "scripts": ErrNotChecked}
	if out["redis"] == nil {
		out["scripts"] = s.inv.LoadScripts(ctx)
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		out["cluster"] = clusterState(ctx, cc)
	}
	return out
}

// clusterState asks every master for CLUSTER INFO: ready when each says cluster_state:ok
// (every slot, so every partition, has a master that answers).
func clusterState(ctx context.Context, cc *redis.ClusterClient) error {
	return cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		info, err := n.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster state is not ok", n.Options().Addr)
		}
		return nil
	})
}

// reqLog is the request's logger: every line it writes carries the request id. It is
// made on first use, since most requests log nothing.
func reqLog(c *fiber.Ctx, base *slog.Logger) *slog.Logger {
	if l, ok := c.Locals(localLogger).(*slog.Logger); ok {
		return l
	}
	id, ok := c.Locals(localRequestID).(string)
	if !ok {
		return base
	}
	l := base.With("request_id", id)
	c.Locals(localLogger, l)
	return l
}
