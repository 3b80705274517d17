package webhook

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the webhook collectors. A nil *Metrics records nothing.
type Metrics struct {
	attempts  *prometheus.CounterVec // by outcome: delivered, retry, failed
	delivered prometheus.Counter
	failed    prometheus.Counter
	latency   prometheus.Histogram
}

// NewMetrics creates the collectors and registers them on reg, with a backlog gauge
// that counts s's pending deliveries in MongoDB when Prometheus scrapes:
//
//	flashstock_webhook_attempts_total{outcome}          attempts: delivered, retry (one is scheduled), failed (given up)
//	flashstock_webhook_delivered_total                  deliveries delivered
//	flashstock_webhook_failed_total                     deliveries failed after their last retry
//	flashstock_webhook_delivery_duration_seconds        request latency per attempt
//	flashstock_webhook_backlog{state="new"|"retrying"}  pending deliveries, by whether they were attempted yet
func NewMetrics(reg prometheus.Registerer, s *Service) (*Metrics, error) {
	m := &Metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashstock_webhook_attempts_total",
			Help: "Webhook delivery attempts by outcome (delivered, retry, failed)."}, []string{"outcome"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashstock_webhook_delivered_total",
			Help: "Webhook deliveries acknowledged with a 2xx."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashstock_webhook_failed_total",
			Help: "Webhook deliveries given up after their last retry."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flashstock_webhook_delivery_duration_seconds",
			Help: "Webhook request latency per attempt.", Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
	}
	cs := []prometheus.Collector{m.attempts, m.delivered, m.failed, m.latency}
	if s != nil {
		cs = append(cs, backlog{s})
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) attempt(status string, d time.Duration) {
	if m == nil {
		return
	}
	m.latency.Observe(d.Seconds())
	switch status {
	case StatusDelivered:
		m.attempts.WithLabelValues("delivered").Inc()
		m.delivered.Inc()
	case StatusFailed:
		m.attempts.WithLabelValues("failed").Inc()
		m.failed.Inc()
	default:
		m.attempts.WithLabelValues("retry").Inc()
	}
}

var backlogDesc = prometheus.NewDesc("flashstock_webhook_backlog",
	"Pending webhook deliveries: new (not attempted yet) and retrying.", []string{"state"}, nil)

// backlog reads the pending deliveries at scrape time.
type backlog struct{ s *Service }

func (backlog) Describe(ch chan<- *prometheus.Desc) { ch <- backlogDesc }

func (b backlog) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	fresh, retrying, err := b.s.backlog(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(backlogDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(fresh), "new")
	ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(retrying), "retrying")
}

// Delivered is the counter of deliveries delivered.
func (m *Metrics) Delivered() prometheus.Counter { return m.delivered }

// Failed is the counter of deliveries given up.
func (m *Metrics) Failed() prometheus.Counter { return m.failed }
