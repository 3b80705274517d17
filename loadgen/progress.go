package loadgen

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// startBar redraws a one-line progress bar on w every 100 ms until the returned stop is
// called, which draws the final state and ends the line. A nil w draws nothing.
func startBar(w io.Writer, label string, total int64, c *live, start time.Time) (stop func()) {
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
				fmt.Fprintf(w, "\r%s\n", bar(label, total, c, time.Since(start)))
				return
			case <-t.C:
				fmt.Fprintf(w, "\r%s", bar(label, total, c, time.Since(start)))
			}
		}
	}()
	return func() { close(done); <-finished }
}

func bar(label string, total int64, c *live, elapsed time.Duration) string {
	const width = 30
	n := c.done.Load()
	filled := 0
	if total > 0 {
		filled = int(min(n, total) * width / total)
	}
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(n) / s
	}
	return fmt.Sprintf("%-22s [%s%s] %3d%% %9d/%d %8.0f/s  ok %d  refused %d  errors %d  ",
		label, strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		n*100/max(total, 1), n, total, rate, c.ok.Load(), c.refused.Load(), c.failed.Load())
}
