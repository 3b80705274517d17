package loadgen

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// startBar redraws a one-line progress bar on w every 100 ms until the returned stop is
// called, which draws the final state and ends the line. A nil w draws nothing.
// The bar fills by attempts, or by time when the run is bounded by a duration.
func startBar(w io.Writer, label string, buyers int, d time.Duration, c *live, start time.Time) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintf(w, "\r%s\n", bar(label, buyers, d, c, time.Since(start)))
				return
			case <-t.C:
				fmt.Fprintf(w, "\r%s", bar(label, buyers, d, c, time.Since(start)))
			}
		}
	}()
	return func() { close(done); <-finished }
}

func bar(label string, buyers int, d time.Duration, c *live, elapsed time.Duration) string {
	const width = 30
	n := c.done.Load()
	frac := float64(n) / float64(max(buyers, 1))
	if d > 0 {
		frac = max(frac, elapsed.Seconds()/d.Seconds())
	}
	frac = min(frac, 1)
	filled := int(frac * width)
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(n) / s
	}
	return fmt.Sprintf("%-20s [%s%s] %3.0f%% %9d done %8.0f/s  ok %d  refused %d  errors %d  ",
		label, strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		frac*100, n, rate, c.ok.Load(), c.refused.Load(), c.failed.Load())
}
