package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// MemorySample is the server's memory at one moment of a sustained run, read from its
// /metrics.
type MemorySample struct {
	AtSeconds float64 `json:"atSeconds"`
	RSSBytes  float64 `json:"rssBytes"`
	HeapBytes float64 `json:"heapInuseBytes"`
	// Requests is how many attempts had finished by then.
	Requests int64 `json:"requests"`
}

// Soak is a sustained run with the server's memory sampled along the way.
type Soak struct {
	Result  *Result        `json:"result"`
	Samples []MemorySample `json:"samples"`
	// GrowthPerMillionRequests is the RSS slope (least squares) over the second half of
	// the run, in bytes per million requests: near zero when memory is flat.
	GrowthPerMillionRequests float64 `json:"rssGrowthBytesPerMillionRequests"`
}

// RunSoak drives target at cfg (the open model suits it) and samples the server's
// memory every interval.
func (h *HTTP) RunSoak(ctx context.Context, cfg Config, every time.Duration, progress io.Writer) (*Soak, error) {
	s := &Soak{}
	stop := make(chan struct{})
	done := make(chan struct{})
	start := time.Now()
	var counter func() int64
	sampled := make(chan func() int64, 1)
	cfg.onStart = func(done func() int64) { sampled <- done }
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		select {
		case counter = <-sampled:
		case <-stop:
			return
		}
		for {
			if m, err := h.memory(ctx); err == nil {
				m.AtSeconds, m.Requests = time.Since(start).Seconds(), counter()
				s.Samples = append(s.Samples, m)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	r, err := Run(ctx, h, cfg, progress)
	close(stop)
	<-done
	if err != nil {
		return nil, err
	}
	if m, err := h.memory(ctx); err == nil {
		m.AtSeconds, m.Requests = time.Since(start).Seconds(), r.Attempts
		s.Samples = append(s.Samples, m)
	}
	s.Result = r
	s.GrowthPerMillionRequests = slope(s.Samples[len(s.Samples)/2:]) * 1e6
	return s, nil
}

// slope is the least-squares RSS growth per request.
func slope(ms []MemorySample) float64 {
	if len(ms) < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for _, m := range ms {
		x, y := float64(m.Requests), m.RSSBytes
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	n := float64(len(ms))
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

func (h *HTTP) memory(ctx context.Context) (MemorySample, error) {
	status, body, err := h.do(ctx, "GET", "/metrics", nil, "", nil)
	if err != nil {
		return MemorySample{}, err
	}
	if status != 200 {
		return MemorySample{}, fmt.Errorf("/metrics answered %d", status)
	}
	var m MemorySample
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "process_resident_memory_bytes":
			m.RSSBytes, _ = strconv.ParseFloat(value, 64)
		case "go_memstats_heap_inuse_bytes":
			m.HeapBytes, _ = strconv.ParseFloat(value, 64)
		}
	}
	return m, nil
}
