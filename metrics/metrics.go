// Package metrics is flashstock's Prometheus instrumentation: HTTP latency by route,
// checkout outcomes, stock conflicts, per-SKU stock gauges, holds, outbox lag, syncer
// errors and Redis and MongoDB latency. Gauges that describe state (holds, lag) are read
// from Redis when Prometheus scrapes; the per-SKU stock gauges, which cost a read of
// every SKU, are read at most once per State.LevelsEvery however often scrapes come.
package metrics

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/event"
)

// Metrics holds the collectors; one per process.
type Metrics struct {
	Registry     *prometheus.Registry
	HTTP         *prometheus.HistogramVec // seconds, by method, route, status
	Checkouts    *prometheus.CounterVec   // by operation and outcome
	Conflicts    *prometheus.CounterVec   // refusals because of stock, by code
	HoldsExpired prometheus.Counter
	// QueueAdmitted counts buyers a waiting room admitted (passes issued), by SKU: its
	// rate is the room's admission rate.
	QueueAdmitted *prometheus.CounterVec
	// QueuePasses counts passes by SKU and outcome: used (spent by a checkout or hold)
	// or expired (unused).
	QueuePasses *prometheus.CounterVec
	Redis       *prometheus.HistogramVec // seconds, by command
	Mongo       *prometheus.HistogramVec // seconds, by command and result
}

// New creates and registers the collectors (plus the Go and process collectors).
func New() *Metrics {
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		HTTP: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "flashstock_http_request_duration_seconds",
			Help: "HTTP request latency by route.", Buckets: buckets}, []string{"method", "route", "status"}),
		Checkouts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashstock_checkout_attempts_total",
			Help: "Checkout, hold and commit attempts by outcome (ok or the problem code)."}, []string{"operation", "outcome"}),
		Conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashstock_stock_conflicts_total",
			Help: "Requests refused because of stock (out_of_stock, insufficient_stock, version_conflict)."}, []string{"code"}),
		HoldsExpired: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashstock_holds_expired_total",
			Help: "Holds expired by the sweep."}),
		QueueAdmitted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashstock_queue_admitted_total",
			Help: "Buyers admitted by a waiting room (passes issued), by SKU."}, []string{"sku"}),
		QueuePasses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashstock_queue_passes_total",
			Help: "Waiting-room passes by SKU and outcome: used by a checkout or hold, or expired unused."}, []string{"sku", "outcome"}),
		Redis: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "flashstock_redis_command_duration_seconds",
			Help: "Redis round-trip latency by command (pipelines count once).", Buckets: buckets}, []string{"command"}),
		Mongo: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "flashstock_mongodb_command_duration_seconds",
			Help: "MongoDB command latency.", Buckets: buckets}, []string{"command", "result"}),
	}
	m.Registry.MustRegister(m.HTTP, m.Checkouts, m.Conflicts, m.HoldsExpired, m.QueueAdmitted, m.QueuePasses, m.Redis, m.Mongo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// RedisHook returns a go-redis hook that times every command and pipeline.
func (m *Metrics) RedisHook() redis.Hook { return redisHook{m.Redis} }

type redisHook struct{ h *prometheus.HistogramVec }

func (redisHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		r.h.WithLabelValues(cmd.Name()).Observe(time.Since(start).Seconds())
		return err
	}
}

func (r redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		r.h.WithLabelValues("pipeline").Observe(time.Since(start).Seconds())
		return err
	}
}

// MongoMonitor returns a command monitor that times every MongoDB command.
func (m *Metrics) MongoMonitor() *event.CommandMonitor {
	return &event.CommandMonitor{
		Succeeded: func(_ context.Context, e *event.CommandSucceededEvent) {
			m.Mongo.WithLabelValues(e.CommandName, "ok").Observe(e.Duration.Seconds())
		},
		Failed: func(_ context.Context, e *event.CommandFailedEvent) {
			m.Mongo.WithLabelValues(e.CommandName, "error").Observe(e.Duration.Seconds())
		},
	}
}

// State reads what the scrape-time gauges report.
type State struct {
	// Levels returns every SKU's available units. It reads every SKU, so scrapes share
	// one call per LevelsEvery.
	Levels func(ctx context.Context) (map[string]int64, error)
	// LevelsEvery is how long one Levels answer (or failure) serves scrapes (default
	// DefaultLevelsEvery): the stock gauges lag by at most that long.
	LevelsEvery time.Duration
	// Now is the clock for LevelsEvery (default time.Now).
	Now func() time.Time
	// QueueLengths returns how many buyers wait in each SKU's waiting room (SKUs with
	// nobody waiting may be left out). It is read with Levels, as often.
	QueueLengths func(ctx context.Context) (map[string]int64, error)
	// ActiveHolds counts holds not yet settled.
	ActiveHolds func(ctx context.Context) (int64, error)
	// OutboxLag counts outbox entries not yet persisted (nil where no syncer runs).
	OutboxLag func(ctx context.Context) (int64, error)
	// PartitionLag, with several partitions, counts each partition's outbox entries not
	// yet persisted, in partition order (nil or one partition: not exported).
	PartitionLag func(ctx context.Context) ([]int64, error)
	// ClusterOK, on a Redis Cluster, says whether every master reports cluster_state:ok
	// (nil elsewhere: not exported).
	ClusterOK func(ctx context.Context) error
	// SyncerErrors counts failed MongoDB writes of this process's syncer.
	SyncerErrors func() int64
	// SyncConflicts counts movements this process's syncer found under a ledger id
	// MongoDB holds with other content: the sign of a Redis rollback.
	SyncConflicts func() int64
	// DeadLetterFailures counts failed writes of undecodable entries to the dead-letter
	// stream (each retried; the entry stays unacknowledged meanwhile).
	DeadLetterFailures func() int64
	// Rollbacks counts SKUs found rolled back (MongoDB ahead of Redis) by this process,
	// at start-up or in reconciliation.
	Rollbacks func() int64
	// RedisMemory reports Redis's used memory and its maxmemory (0 = unlimited).
	RedisMemory func(ctx context.Context) (used, limit int64, err error)
	// LowStock is the available level at or below which a SKU counts as low.
	LowStock int64
	Logger   *slog.Logger
}

// DefaultLevelsEvery is State.LevelsEvery's default.
const DefaultLevelsEvery = 5 * time.Second

// RegisterState adds the scrape-time gauges.
func (m *Metrics) RegisterState(s State) {
	if s.LevelsEvery <= 0 {
		s.LevelsEvery = DefaultLevelsEvery
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	m.Registry.MustRegister(&stateCollector{s: s,
		available: prometheus.NewDesc("flashstock_stock_available", "Available units by SKU.", []string{"sku"}, nil),
		queue:     prometheus.NewDesc("flashstock_queue_waiting", "Buyers waiting in a SKU's waiting room.", []string{"sku"}, nil),
		low:       prometheus.NewDesc("flashstock_stock_low", "1 when a SKU's available units are at or below the low-stock threshold.", []string{"sku"}, nil),
		holds:     prometheus.NewDesc("flashstock_holds_active", "Holds not yet committed, released or expired.", nil, nil),
		lag:       prometheus.NewDesc("flashstock_outbox_lag_entries", "Outbox entries not yet persisted to MongoDB.", nil, nil),
		partLag: prometheus.NewDesc("flashstock_outbox_partition_lag_entries",
			"Outbox entries not yet persisted to MongoDB, by partition (with several partitions).", []string{"partition"}, nil),
		clusterOK: prometheus.NewDesc("flashstock_redis_cluster_ok",
			"1 when every Redis Cluster master reports cluster_state:ok (on a cluster only).", nil, nil),
		errs:      prometheus.NewDesc("flashstock_syncer_errors_total", "Failed MongoDB writes of the syncer (each retried).", nil, nil),
		memUsed:   prometheus.NewDesc("flashstock_redis_memory_used_bytes", "Redis used_memory.", nil, nil),
		memMax:    prometheus.NewDesc("flashstock_redis_memory_max_bytes", "Redis maxmemory (0 = unlimited).", nil, nil),
		up:        prometheus.NewDesc("flashstock_state_scrape_ok", "1 when the last scrape could read Redis.", nil, nil),
		conflicts: prometheus.NewDesc("flashstock_sync_conflicts_total", "Movements found under a ledger id MongoDB holds with other content (a Redis rollback).", nil, nil),
		dead:      prometheus.NewDesc("flashstock_sync_dead_letter_failures_total", "Failed writes of undecodable outbox entries to the dead-letter stream.", nil, nil),
		rollbacks: prometheus.NewDesc("flashstock_redis_rollbacks_total", "SKUs found with MongoDB ahead of Redis (a Redis rollback) and restored.", nil, nil),
	})
}

type stateCollector struct {
	s                                                     State
	available, low, holds, lag, errs, memUsed, memMax, up *prometheus.Desc
	conflicts, dead, rollbacks, queue                     *prometheus.Desc
	partLag, clusterOK                                    *prometheus.Desc

	// levelsMu serialises refreshes: scrapes that arrive during one wait for it
	// instead of starting their own.
	levelsMu  sync.Mutex
	levels    map[string]int64 // never modified once stored: scrapes share it
	queues    map[string]int64 // likewise, read with levels
	levelsErr error
	levelsAt  time.Time // when levels was read; zero before the first read
}

// cachedLevels returns the last Levels answer if it is younger than LevelsEvery, and
// reads a new one otherwise. A failure is remembered as long as an answer would be, so a
// Redis that is down costs one attempt per interval too.
func (c *stateCollector) cachedLevels(ctx context.Context) (levels, queues map[string]int64, err error) {
	c.levelsMu.Lock()
	defer c.levelsMu.Unlock()
	now := c.s.Now()
	if !c.levelsAt.IsZero() && now.Sub(c.levelsAt) < c.s.LevelsEvery && now.Sub(c.levelsAt) >= 0 {
		return c.levels, c.queues, c.levelsErr
	}
	c.levels, c.levelsErr = c.s.Levels(ctx)
	c.queues = nil
	if c.levelsErr == nil && c.s.QueueLengths != nil {
		c.queues, c.levelsErr = c.s.QueueLengths(ctx)
	}
	c.levelsAt = now
	return c.levels, c.queues, c.levelsErr
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.available, c.low, c.holds, c.lag, c.errs, c.memUsed, c.memMax, c.up,
		c.conflicts, c.dead, c.rollbacks, c.queue, c.partLag, c.clusterOK} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ok := 1.0
	fail := func(what string, err error) {
		ok = 0
		if c.s.Logger != nil {
			c.s.Logger.Warn("metrics scrape could not read state", "what", what, "err", err)
		}
	}
	if c.s.Levels != nil {
		levels, queues, err := c.cachedLevels(ctx)
		if err != nil {
			fail("levels", err)
		}
		for sku, n := range queues {
			ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(n), sku)
		}
		for sku, a := range levels {
			ch <- prometheus.MustNewConstMetric(c.available, prometheus.GaugeValue, float64(a), sku)
			low := 0.0
			if a <= c.s.LowStock {
				low = 1
			}
			ch <- prometheus.MustNewConstMetric(c.low, prometheus.GaugeValue, low, sku)
		}
	}
	if c.s.ActiveHolds != nil {
		if n, err := c.s.ActiveHolds(ctx); err != nil {
			fail("holds", err)
		} else {
			ch <- prometheus.MustNewConstMetric(c.holds, prometheus.GaugeValue, float64(n))
		}
	}
	if c.s.OutboxLag != nil {
		if n, err := c.s.OutboxLag(ctx); err != nil {
			fail("lag", err)
		} else {
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(n))
		}
	}
	if c.s.PartitionLag != nil {
		if lags, err := c.s.PartitionLag(ctx); err != nil {
			fail("partition lag", err)
		} else if len(lags) > 1 {
			for p, n := range lags {
				ch <- prometheus.MustNewConstMetric(c.partLag, prometheus.GaugeValue, float64(n), strconv.Itoa(p))
			}
		}
	}
	if c.s.ClusterOK != nil {
		ok := 1.0
		if c.s.ClusterOK(ctx) != nil {
			ok = 0
		}
		ch <- prometheus.MustNewConstMetric(c.clusterOK, prometheus.GaugeValue, ok)
	}
	if c.s.SyncerErrors != nil {
		ch <- prometheus.MustNewConstMetric(c.errs, prometheus.CounterValue, float64(c.s.SyncerErrors()))
	}
	if c.s.RedisMemory != nil {
		if used, limit, err := c.s.RedisMemory(ctx); err != nil {
			fail("redis memory", err)
		} else {
			ch <- prometheus.MustNewConstMetric(c.memUsed, prometheus.GaugeValue, float64(used))
			ch <- prometheus.MustNewConstMetric(c.memMax, prometheus.GaugeValue, float64(limit))
		}
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, ok)
	for _, k := range []struct {
		d *prometheus.Desc
		n func() int64
	}{{c.conflicts, c.s.SyncConflicts}, {c.dead, c.s.DeadLetterFailures}, {c.rollbacks, c.s.Rollbacks}} {
		if k.n != nil {
			ch <- prometheus.MustNewConstMetric(k.d, prometheus.CounterValue, float64(k.n()))
		}
	}
}

// RedisMemoryFrom reads used_memory and maxmemory from INFO memory.
func RedisMemoryFrom(rdb redis.UniversalClient) func(ctx context.Context) (int64, int64, error) {
	return func(ctx context.Context) (int64, int64, error) {
		info, err := rdb.Info(ctx, "memory").Result()
		if err != nil {
			return 0, 0, err
		}
		var used, limit int64
		for line := range strings.SplitSeq(info, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
			switch k {
			case "used_memory":
				used, _ = strconv.ParseInt(v, 10, 64)
			case "maxmemory":
				limit, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		return used, limit, nil
	}
}
