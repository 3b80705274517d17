package loadgen

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// attempt is one buyer's request as the driver saw it. Times are nanoseconds since the
// run started; n is the attempt's number, which says what it asked for (plan.linesFor).
type attempt struct {
	start, end int64
	n          int32
	outcome    Outcome
	// liar: an out_of_stock answer whose own figures show enough stock for every line.
	liar   bool
	reason string
}

// ret is a cancellation that returned units to the shelf.
type ret struct {
	start, end int64
	sku        int
	qty        int64
}

// worker keeps what one goroutine recorded, merged when the run ends.
type worker struct {
	attempts []attempt
	failures map[string]error // a sample cause per failure class
}

// live counts attempts as they finish, for the progress bar.
type live struct {
	done, ok, refused, failed atomic.Int64
}

// Run drives target through one scenario and returns what it measured. progress, if not
// nil, gets a progress bar redrawn in place (pass a terminal, not a file).
func Run(ctx context.Context, target Target, cfg Config, progress io.Writer) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if cfg.Scenario == Queue {
		return runQueue(ctx, target, cfg, progress)
	}
	holder, _ := target.(Holder)
	if cfg.Scenario == Holds && holder == nil {
		return nil, fmt.Errorf("%s has no holds", target.Name())
	}
	p := newPlan(cfg)
	if err := target.Prepare(ctx, p.stock); err != nil {
		return nil, fmt.Errorf("%s: prepare: %w", target.Name(), err)
	}
	before, err := target.Levels(ctx, p.skus)
	if err != nil {
		return nil, fmt.Errorf("%s: levels before: %w", target.Name(), err)
	}

	var (
		next    atomic.Int64
		counts  live
		workers = make([]worker, cfg.Concurrency)
		wg      sync.WaitGroup
		sold    = make(chan sale, 4096)
		start   = time.Now()
	)
	since := func() int64 { return int64(time.Since(start)) }
	deadline := int64(0)
	if cfg.Rate == 0 {
		deadline = int64(cfg.Duration)
	}
	if cfg.onStart != nil {
		cfg.onStart(counts.done.Load)
	}
	stopBar := startBar(progress, target.Name()+" "+cfg.Scenario, cfg.Buyers, cfg.Duration, &counts, start)
	for w := range workers {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			w.failures = map[string]error{}
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(cfg.Buyers) || (deadline > 0 && since() >= deadline) {
					return
				}
				begin := since()
				if cfg.Rate > 0 {
					// The open model: latency counts from the scheduled start.
					due := int64(float64(i) * 1e9 / cfg.Rate)
					if wait := due - begin; wait > 0 {
						time.Sleep(time.Duration(wait))
					}
					begin = due
				}
				buyer := int(i) % cfg.Users
				key := ""
				if !cfg.NoKeys {
					key = cfg.RunID + "-" + strconv.FormatInt(i, 36)
				}
				lines := p.linesFor(int(i))
				var a Answer
				if cfg.Scenario == Holds {
					if a = holder.Reserve(ctx, buyer, key, lines); a.Outcome == OK {
						a = holder.Commit(ctx, buyer, a.ID, key)
						if a.Outcome == Refused {
							// A fresh hold that cannot be committed is a fault, not a refusal.
							a.Outcome = Failed
						}
					}
				} else {
					a = target.Checkout(ctx, buyer, key, lines)
				}
				rec := attempt{start: begin, end: since(), n: int32(i), outcome: a.Outcome, reason: a.Reason}
				switch a.Outcome {
				case OK:
					counts.ok.Add(1)
					if cfg.Scenario == Storm {
						select {
						case sold <- sale{buyer: buyer, id: a.ID}:
						default:
						}
					}
				case Refused:
					counts.refused.Add(1)
					rec.liar = a.Reason == "out_of_stock" && allServable(a)
				case Failed:
					counts.failed.Add(1)
					if _, ok := w.failures[a.Reason]; !ok {
						w.failures[a.Reason] = a.Err
					}
				}
				counts.done.Add(1)
				w.attempts = append(w.attempts, rec)
			}
		}(&workers[w])
	}

	var returns []ret
	var cancelFailures int64
	stopCancel := make(chan struct{})
	cancelDone := make(chan struct{})
	if c, ok := target.(Canceller); ok && cfg.Scenario == Storm {
		go func() {
			defer close(cancelDone)
			returns, cancelFailures = cancelDuring(ctx, c, sold, cfg.CancelEvery, stopCancel, since)
		}()
	} else {
		close(cancelDone)
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopCancel)
	<-cancelDone
	stopBar()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	after, err := target.Levels(ctx, p.skus)
	if err != nil {
		return nil, fmt.Errorf("%s: levels after: %w", target.Name(), err)
	}
	r := summarize(target.Name(), cfg, p, workers, elapsed)
	r.CancelFailures = cancelFailures
	r.check(p, workers, returns, before, after)
	return r, nil
}

type sale struct {
	buyer int
	id    string
}

// cancelDuring cancels one recent sale every interval until stop, recording each return.
func cancelDuring(ctx context.Context, c Canceller, sold <-chan sale, every time.Duration, stop <-chan struct{}, since func() int64) ([]ret, int64) {
	var returns []ret
	var failures int64
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return returns, failures
		case <-ctx.Done():
			return returns, failures
		case <-tick.C:
		}
		var s sale
		select {
		case s = <-sold:
		default:
			continue
		}
		begin := since()
		a := c.Cancel(ctx, s.buyer, s.id)
		if a.Outcome != OK {
			failures++
			continue
		}
		returns = append(returns, ret{start: begin, end: since(), sku: 0, qty: 1})
	}
}
