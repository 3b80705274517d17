package api_test

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/flashstock/flashstock/api"
)

// /readyz names each dependency's state in a word; what went wrong (addresses, driver
// messages) goes to the log only.
func TestReadyzShowsStatusWordsNotErrors(t *testing.T) {
	var logs bytes.Buffer
	h := newHarnessLogging(t, api.Config{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	r := h.do(t, "GET", "/readyz", "", "")
	want(t, r, 200, "")
	if c := r.json(t)["checks"].(map[string]any); c["redis"] != "ok" || c["mongodb"] != "ok" || c["scripts"] != "ok" {
		t.Fatalf("all up: %s", r.body)
	}

	h.srv.Stop()
	r = h.do(t, "GET", "/readyz", "", "")
	want(t, r, 503, "")
	m := r.json(t)
	c := m["checks"].(map[string]any)
	if m["ready"] != false || c["redis"] != "unavailable" || c["mongodb"] != "ok" || c["scripts"] != "unknown" || len(c) != 3 {
		t.Fatalf("redis down: got %s, want redis unavailable, mongodb ok, scripts unknown", r.body)
	}
	_, port, _ := net.SplitHostPort(h.srv.Addr)
	for _, leak := range []string{h.srv.Addr, port, "dial", "refused", "tcp"} {
		if strings.Contains(string(r.body), leak) {
			t.Errorf("/readyz shows %q: %s", leak, r.body)
		}
	}
	// The operator still finds the reason, with the request id, in the log.
	if !strings.Contains(logs.String(), `"dependency":"redis"`) || !strings.Contains(logs.String(), port) {
		t.Errorf("the log lacks the redis error:\n%s", logs.String())
	}
}
