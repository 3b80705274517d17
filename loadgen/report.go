package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// Report is a set of runs and the ratios between them.
type Report struct {
	Machine string    `json:"machine,omitempty"`
	Results []*Result `json:"results"`
	Ratios  []Ratio   `json:"ratios,omitempty"`
	Soak    *Soak     `json:"soak,omitempty"`
	Notes   []string  `json:"notes,omitempty"`
}

// Ratio compares two figures from the same run.
type Ratio struct {
	Name  string  `json:"name"`
	Of    float64 `json:"of"`
	To    float64 `json:"to"`
	Value float64 `json:"value"`
}

// AddRatio records of/to under name (nothing if to is 0).
func (r *Report) AddRatio(name string, of, to float64) {
	if to == 0 {
		return
	}
	r.Ratios = append(r.Ratios, Ratio{Name: name, Of: of, To: to, Value: of / to})
}

// Find returns the first result of target and scenario, or nil.
func (r *Report) Find(target, scenario string) *Result {
	for _, x := range r.Results {
		if x.Target == target && x.Scenario == scenario {
			return x
		}
	}
	return nil
}

// WriteJSON writes the report for machines.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tscenario\tmodel\tattempts\tok\trefused\terrors\tattempts/s\tok/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\toversell\tfalse refusals\t")
	for _, x := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.1f\t%d\t%d\t\n",
			x.Target, x.Scenario, x.Model, x.Attempts, x.Successes, x.Refused(), x.Failed(),
			x.AttemptsPerSecond, x.SuccessesPerSecond, x.Latency.P50, x.Latency.P95, x.Latency.P99, x.Latency.Max,
			x.Oversell, x.FalseRefusals)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var details []string
	for _, x := range r.Results {
		var parts []string
		if len(x.Refusals) > 0 {
			parts = append(parts, "refused "+counts(x.Refusals))
		}
		if len(x.Errors) > 0 {
			parts = append(parts, "errors "+counts(x.Errors))
		}
		if x.RefusalsPerSecond > 0 {
			parts = append(parts, fmt.Sprintf("refusals/s after the first %.0f", x.RefusalsPerSecond))
		}
		if x.UnitsReturned > 0 || x.CancelFailures > 0 {
			parts = append(parts, fmt.Sprintf("returned %d units (%d cancels failed)", x.UnitsReturned, x.CancelFailures))
		}
		if q := x.Queue; q != nil {
			parts = append(parts, fmt.Sprintf("queue at %d/min: %d joins at %.0f/s (p99 %.2f ms), %d polls at %.0f/s (p99 %.2f ms); %d admitted, %d told sold out, %d passes expired, %d failed calls; sold out %.1f s after the opening",
				q.AdmitPerMinute, q.Joins, q.JoinsPerSecond, q.JoinLatency.P99, q.Polls, q.PollsPerSecond, q.PollLatency.P99,
				q.Admitted, q.SoldOut, q.Expired, q.Failures, q.SecondsToSellOut))
		}
		if x.DriverCPU > 0 || x.ServerCPU > 0 || x.RedisCPU > 0 {
			parts = append(parts, fmt.Sprintf("CPU µs per attempt: driver %.1f, server %.1f, redis %.1f", x.DriverCPU, x.ServerCPU, x.RedisCPU))
		}
		parts = append(parts, fmt.Sprintf("stock %d → %d, reserved %d, sold %d, unaccounted %d",
			x.StockBefore, x.StockAfter, x.ReservedAfter, x.UnitsSold, x.Unaccounted))
		details = append(details, fmt.Sprintf("  %s %s: %s", x.Target, x.Scenario, strings.Join(parts, "; ")))
		for _, class := range slices.Sorted(maps.Keys(x.ErrorSamples)) {
			details = append(details, fmt.Sprintf("    e.g. %s: %s", class, x.ErrorSamples[class]))
		}
		details = append(details, x.Nodes.lines()...)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, strings.Join(details, "\n"))
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w, "\nratios (same run):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, q := range r.Ratios {
			fmt.Fprintf(tw, "  %s\t%.2f\t(%.0f / %.0f)\n", q.Name, q.Value, q.Of, q.To)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if s := r.Soak; s != nil {
		x := s.Result
		fmt.Fprintf(w, "\nsoak (%s hot, %s): %d attempts, %d ok, %d refused, %d errors; p50 %.2f ms, p99 %.2f ms, max %.1f ms; oversell %d, false refusals %d\n",
			x.Target, x.Model, x.Attempts, x.Successes, x.Refused(), x.Failed(), x.Latency.P50, x.Latency.P99, x.Latency.Max, x.Oversell, x.FalseRefusals)
		fmt.Fprintf(w, "server memory during the soak:\n")
		for _, m := range s.Samples {
			fmt.Fprintf(w, "  %6.0f s  %9d requests  RSS %6.1f MiB  heap in use %6.1f MiB\n",
				m.AtSeconds, m.Requests, m.RSSBytes/(1<<20), m.HeapBytes/(1<<20))
		}
		fmt.Fprintf(w, "  RSS slope over the second half: %+.0f KiB per million requests\n", s.GrowthPerMillionRequests/1024)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	return nil
}

func counts(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
