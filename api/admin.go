package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flashstock/flashstock/engine"
)

type bulkReport struct {
	Buyers             int              `json:"buyers"`
	Succeeded          int64            `json:"succeeded"`
	OutOfStock         int64            `json:"outOfStock"`
	LimitExceeded      int64            `json:"limitExceeded"`
	Failed             int64            `json:"failed"`
	DurationMs         int64            `json:"durationMs"`
	CheckoutsPerSecond float64          `json:"checkoutsPerSecond"`
	LatencyMs          latencyView      `json:"latencyMs"`
	StockBefore        map[string]int64 `json:"stockBefore"`
	StockAfter         map[string]int64 `json:"stockAfter"`
	Oversold           int64            `json:"oversold"`
}

type latencyView struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// bulkCheckout runs a flash-sale simulation: `buyers` distinct synthetic customers buy
// the same items through the real checkout path, `concurrency` at a time. The report's
// figures are measured: stock is read before and after.
func (s *server) bulkCheckout(c *fiber.Ctx) error {
	var in struct {
		Items       *[]engine.Line `json:"items"`
		Buyers      *int           `json:"buyers"`
		Concurrency *int           `json:"concurrency"`
	}
	if _, err := decodeStrict(c.Body(), &in, false); err != nil {
		return err
	}
	switch {
	case in.Items == nil || len(*in.Items) == 0:
		return validation("items", "at least one line is required")
	case in.Buyers == nil || *in.Buyers < 1 || *in.Buyers > 100_000:
		return validation("buyers", "must be between 1 and 100000")
	case in.Concurrency == nil || *in.Concurrency < 1 || *in.Concurrency > 1000:
		return validation("concurrency", "must be between 1 and 1000")
	}
	lines := *in.Items
	units := map[string]int64{}
	for _, l := range lines {
		if !engine.ValidSKU(l.SKU) {
			return validation("items", "every sku must be 1-64 characters of [A-Za-z0-9._-]")
		}
		units[l.SKU] += l.Quantity
	}
	skus := make([]string, 0, len(units))
	for sku := range units {
		skus = append(skus, sku)
	}
	slices.Sort(skus)
	// The simulation outlives the usual request deadline.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.UserContext()), 10*time.Minute)
	defer cancel()
	before, err := s.inv.Levels(ctx, skus)
	if err != nil {
		return err
	}

	run := engine.NewID()[24:]
	buyers, conc := *in.Buyers, *in.Concurrency
	lat := make([]time.Duration, buyers)
	var ok, oos, limit, failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	next := atomic.Int64{}
	start := time.Now()
	var wg sync.WaitGroup
	for range min(conc, buyers) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= buyers {
					return
				}
				t0 := time.Now()
				_, err := s.placeOrder(ctx, fmt.Sprintf("sim-%s-%d", run, i), lines, "", 0)
				lat[i] = time.Since(t0)
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, engine.ErrOutOfStock):
					oos.Add(1)
				case errors.Is(err, engine.ErrLimitExceeded):
					limit.Add(1)
				case errors.Is(err, engine.ErrInvalid) || errors.Is(err, engine.ErrNotFound):
					errOnce.Do(func() { firstErr = err })
					failed.Add(1)
				default:
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil && failed.Load() == int64(buyers) {
		return firstErr // the request itself was bad: every buyer got the same refusal
	}
	after, err := s.inv.Levels(ctx, skus)
	if err != nil {
		return err
	}

	rep := bulkReport{Buyers: buyers, Succeeded: ok.Load(), OutOfStock: oos.Load(), LimitExceeded: limit.Load(),
		Failed: failed.Load(), DurationMs: elapsed.Milliseconds(),
		CheckoutsPerSecond: float64(buyers) / elapsed.Seconds(), LatencyMs: percentiles(lat),
		StockBefore: map[string]int64{}, StockAfter: map[string]int64{}}
	for i, sku := range skus {
		rep.StockBefore[sku], rep.StockAfter[sku] = before[i].Available, after[i].Available
		// Oversold: units that left available stock beyond what was there, or orders
		// confirmed for units that never left it.
		taken := before[i].Available - after[i].Available
		rep.Oversold += max(0, -after[i].Available) + max(0, rep.Succeeded*units[sku]-taken)
	}
	return c.JSON(rep)
}

func percentiles(d []time.Duration) latencyView {
	if len(d) == 0 {
		return latencyView{}
	}
	slices.Sort(d)
	at := func(q float64) float64 {
		return float64(d[min(len(d)-1, int(q*float64(len(d))))].Microseconds()) / 1000
	}
	return latencyView{P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: float64(d[len(d)-1].Microseconds()) / 1000}
}

func (s *server) reconcileNow(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.UserContext()), 5*time.Minute)
	defer cancel()
	rep, err := s.rc.Run(ctx, true)
	if err != nil {
		return err
	}
	return c.JSON(rep)
}

func (s *server) lastReconcile(c *fiber.Ctx) error {
	rep, err := s.rc.LastReport(c.UserContext())
	if err != nil {
		return err
	}
	return c.JSON(rep)
}
