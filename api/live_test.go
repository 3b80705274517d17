package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flashstock/flashstock/api"
)

// listen runs the app on a free loopback port until the test ends and returns its base
// URL. stop shuts the app down (also done at cleanup).
func (h *harness) listen(t testing.TB) (base string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = h.app.Listener(ln) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.app.ShutdownWithContext(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		// A shutdown that comes before the server has begun to serve (a test failing
		// at once) does not stop it: closing the listener does.
		_ = ln.Close()
		<-served
	}
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

// sse is one server-sent event.
type sse struct {
	event, id, data string
}

// openLive opens the live stream; the events arrive on the channel, which is closed
// when the stream ends.
func openLive(t *testing.T, url, tok string) (*http.Response, <-chan sse) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	events := make(chan sse, 1024)
	if res.StatusCode != 200 {
		close(events)
		return res, events
	}
	go func() {
		defer close(events)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var e sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e.event != "" {
					events <- e
				}
				e = sse{}
			case strings.HasPrefix(line, "event: "):
				e.event = line[len("event: "):]
			case strings.HasPrefix(line, "id: "):
				e.id = line[len("id: "):]
			case strings.HasPrefix(line, "data: "):
				e.data = line[len("data: "):]
			}
		}
	}()
	return res, events
}

// nextEvent waits for the next event named name, failing the test if the stream ends or
// none comes within d.
func nextEvent(t *testing.T, events <-chan sse, name string, d time.Duration) sse {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended before a %s event", name)
			}
			if e.event == name {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s event within %v", name, d)
		}
	}
}

type liveSnapshot struct {
	At   time.Time `json:"at"`
	SKUs []struct {
		SKU       string `json:"sku"`
		Name      string `json:"name"`
		Available int64  `json:"available"`
		Reserved  int64  `json:"reserved"`
		Sold      int64  `json:"sold"`
		Waiting   *int64 `json:"waiting"`
	} `json:"skus"`
	CheckoutsPerSecond *float64 `json:"checkoutsPerSecond"`
	RefusalsPerSecond  *float64 `json:"refusalsPerSecond"`
	SyncLag            *int64   `json:"syncLag"`
}

// The live view shows how many buyers wait in each SKU's waiting room, and nothing for
// SKUs without one.
func TestLiveShowsTheQueue(t *testing.T) {
	h := newHarness(t, api.Config{})
	start := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	h.product(t, "DROP", 5, `,"saleStartsAt":"`+start+`","waitingRoom":{"enabled":true,"admitPerMinute":60}`)
	h.product(t, "PLAIN", 5, "")
	for _, u := range []string{"a", "b", "c"} {
		want(t, h.do(t, "POST", "/api/v1/queue/DROP", token(t, u, api.RoleCustomer), ""), 201, "")
	}
	base, _ := h.listen(t)
	_, events := openLive(t, base+"/api/v1/admin/live", token(t, "root", api.RoleAdmin))
	var snap liveSnapshot
	if err := json.Unmarshal([]byte(nextEvent(t, events, "snapshot", 2*time.Second).data), &snap); err != nil {
		t.Fatal(err)
	}
	got := map[string]*int64{}
	for _, s := range snap.SKUs {
		got[s.SKU] = s.Waiting
	}
	if w, ok := got["DROP"]; !ok || w == nil || *w != 3 {
		t.Errorf("DROP waiting: got %v, want 3", w)
	}
	if w, ok := got["PLAIN"]; !ok || w != nil {
		t.Errorf("PLAIN waiting: got %v (present %v), want absent", w, ok)
	}
}

// The live stream is admin-only (header or ?token=), sends a snapshot whose levels are
// the inventory API's, sends order.confirmed for a checkout made while it is open, and
// ends when the app shuts down.
func TestLiveStream(t *testing.T) {
	h := newHarness(t, api.Config{})
	h.app = api.New(h.cfg, api.Deps{Inv: h.inv, Store: h.st,
		Lag: func(context.Context) (int64, error) { return 7, nil }})
	h.product(t, "TV", 10, "")
	h.product(t, "RADIO", 4, "")
	admin, cust := token(t, "root", api.RoleAdmin), token(t, "c1", api.RoleCustomer)
	want(t, h.do(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"TV","quantity":3}]}`), 201, "")
	want(t, h.do(t, "POST", "/api/v1/holds", cust, `{"items":[{"sku":"TV","quantity":2}]}`), 201, "")
	base, stop := h.listen(t)
	live := base + "/api/v1/admin/live"

	for _, c := range []struct {
		name, url, tok string
		status         int
	}{
		{"no token", live, "", 401},
		{"customer", live, cust, 403},
		{"customer in the query", live + "?token=" + cust, "", 403},
		{"bad token in the query", live + "?token=nonsense", "", 401},
	} {
		res, _ := openLive(t, c.url, c.tok)
		if res.StatusCode != c.status {
			t.Errorf("%s: got %d, want %d", c.name, res.StatusCode, c.status)
		}
	}

	res, events := openLive(t, live+"?token="+admin, "")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("admin: got %d %q, want 200 text/event-stream", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var snap liveSnapshot
	if err := json.Unmarshal([]byte(nextEvent(t, events, "snapshot", 2*time.Second).data), &snap); err != nil {
		t.Fatal(err)
	}
	if snap.At.IsZero() || snap.CheckoutsPerSecond == nil || snap.RefusalsPerSecond == nil {
		t.Errorf("snapshot lacks at or the rates: %+v", snap)
	}
	if snap.SyncLag == nil || *snap.SyncLag != 7 {
		t.Errorf("syncLag: got %v, want 7 (from Deps.Lag)", snap.SyncLag)
	}
	if len(snap.SKUs) != 2 {
		t.Fatalf("snapshot SKUs: got %+v, want RADIO and TV", snap.SKUs)
	}
	for _, s := range snap.SKUs {
		lv := h.do(t, "GET", "/api/v1/inventory/"+s.SKU, cust, "").json(t)
		if float64(s.Available) != lv["available"] || float64(s.Reserved) != lv["reserved"] || float64(s.Sold) != lv["sold"] || s.Name != s.SKU {
			t.Errorf("%s: snapshot %+v, inventory API %v", s.SKU, s, lv)
		}
	}

	// Over the header too; both streams see the checkout.
	_, events2 := openLive(t, live, admin)
	nextEvent(t, events2, "snapshot", 5*time.Second)
	r := h.do(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"RADIO","quantity":1}]}`)
	want(t, r, 201, "")
	orderID := r.json(t)["id"].(string)
	for i, ch := range []<-chan sse{events, events2} {
		e := nextEvent(t, ch, "order.confirmed", 10*time.Second)
		var body struct {
			Type string `json:"type"`
			Data struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(e.data), &body); err != nil {
			t.Fatal(err)
		}
		if body.Type != "order.confirmed" || body.Data.ID != orderID || e.id == "" {
			t.Errorf("stream %d: got %s (id %q), want order.confirmed for %s", i, e.data, e.id, orderID)
		}
	}

	// The rates count what this process saw: one more checkout and one refusal show up
	// in the snapshots that follow them.
	want(t, h.do(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"RADIO","quantity":1}]}`), 201, "")
	want(t, h.do(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"RADIO","quantity":100}]}`), 409, "out_of_stock")
	var sawCheckouts, sawRefusals bool
	for i := 0; !sawCheckouts || !sawRefusals; i++ {
		if i == 10 {
			t.Fatalf("10 snapshots after a checkout and a refusal: saw checkouts %v, refusals %v", sawCheckouts, sawRefusals)
		}
		var s liveSnapshot
		if err := json.Unmarshal([]byte(nextEvent(t, events, "snapshot", 5*time.Second).data), &s); err != nil {
			t.Fatal(err)
		}
		sawCheckouts = sawCheckouts || *s.CheckoutsPerSecond > 0
		sawRefusals = sawRefusals || *s.RefusalsPerSecond > 0
	}

	// Shutting down ends the streams (rather than waiting for the clients).
	stop()
	for range events {
	}
	for range events2 {
	}
}

// The dashboard is served without auth and loads nothing from elsewhere.
func TestDashboardIsSelfContained(t *testing.T) {
	h := newHarness(t, api.Config{})
	r := h.do(t, "GET", "/dashboard", "", "")
	want(t, r, 200, "")
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("content type: got %q, want text/html", ct)
	}
	page := string(r.body)
	for _, must := range []string{"/api/v1/auth/login", "/api/v1/admin/live?token=", "/api/v1/carts/bulk-checkout", "EventSource"} {
		if !strings.Contains(page, must) {
			t.Errorf("the page does not use %s", must)
		}
	}
	if ext := regexp.MustCompile(`(?i)(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//`).FindAllString(page, -1); len(ext) > 0 {
		t.Errorf("the page references external assets: %v", ext)
	}
	if n := strings.Count(strings.ToLower(page), "http://") + strings.Count(strings.ToLower(page), "https://"); n > 0 {
		t.Errorf("the page names %d absolute http(s) URLs", n)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("Content-Security-Policy: got %q, want the page kept to itself", csp)
	}
}
