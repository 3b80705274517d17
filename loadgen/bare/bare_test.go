package bare_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"github.com/gofiber/fiber/v2"

	"github.com/flashstock/flashstock/auth"
	"github.com/flashstock/flashstock/internal/redisserver"
	"github.com/flashstock/flashstock/internal/testredis"
	"github.com/flashstock/flashstock/loadgen"
	"github.com/flashstock/flashstock/loadgen/bare"
)

var secret = []byte("bare-handler-test-secret-0123456789")

func mustToken(tb testing.TB, user, role string) string {
	tb.Helper()
	tok, err := auth.Issue(secret, "flashstock", user, role, time.Hour, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return "Bearer " + tok
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func mustDo(tb testing.TB, app *fiber.App, method, path, token, key, body string) answer {
	tb.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := app.Test(req, -1)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	a := answer{status: res.StatusCode, header: res.Header}
	if len(b) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &a.body); err != nil {
			tb.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return a
}

// The bare handler sells what there is once per key, refuses the rest with the stock it
// saw, writes one outbox entry per sale, and refuses callers without a valid token.
func TestBareHandlerSellsOncePerKey(t *testing.T) {
	_, rdb := testredis.Start(t)
	app := bare.New(rdb, bare.Config{Secret: secret})
	admin, buyer := mustToken(t, "admin-1", auth.RoleAdmin), mustToken(t, "buyer-1", auth.RoleCustomer)
	buy := `{"items":[{"sku":"TV","quantity":1}]}`

	if a := mustDo(t, app, "POST", "/api/v1/products", admin, "", `{"sku":"TV","stock":2}`); a.status != 201 {
		t.Fatalf("create: got %d, want 201", a.status)
	}
	first := mustDo(t, app, "POST", "/api/v1/checkout", buyer, "k1", buy)
	if first.status != 201 || first.body["id"] == "" || first.body["status"] != "confirmed" {
		t.Fatalf("checkout: got %d %v, want 201 with an id", first.status, first.body)
	}
	again := mustDo(t, app, "POST", "/api/v1/checkout", buyer, "k1", buy)
	if again.status != 201 || again.body["id"] != first.body["id"] || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: got %d %v %v, want 201, id %v, replayed", again.status, again.body, again.header, first.body["id"])
	}
	if a := mustDo(t, app, "GET", "/api/v1/inventory/TV", buyer, "", ""); a.status != 200 || a.body["available"] != 1.0 {
		t.Fatalf("level after one sale and its replay: got %d %v, want available 1", a.status, a.body)
	}
	if a := mustDo(t, app, "POST", "/api/v1/checkout", buyer, "", buy); a.status != 201 {
		t.Fatalf("keyless checkout: got %d %v, want 201", a.status, a.body)
	}
	short := mustDo(t, app, "POST", "/api/v1/checkout", buyer, "k3", `{"items":[{"sku":"TV","quantity":2}]}`)
	items, _ := short.body["items"].([]any)
	if short.status != 409 || short.body["code"] != "out_of_stock" || len(items) != 1 ||
		items[0].(map[string]any)["available"] != 0.0 || items[0].(map[string]any)["requested"] != 2.0 {
		t.Fatalf("sold out: got %d %v, want 409 out_of_stock, requested 2, available 0", short.status, short.body)
	}
	if n := rdb.XLen(context.Background(), "bare:{TV}:ob").Val(); n != 2 {
		t.Fatalf("outbox: got %d entries, want 2", n)
	}

	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"no token", "POST", "/api/v1/checkout", "", buy, 401, "unauthorized"},
		{"token of another secret", "POST", "/api/v1/checkout", "Bearer " + mustIssue(t, []byte("another-secret-of-enough-length-00"), auth.RoleCustomer), buy, 401, "unauthorized"},
		{"two lines", "POST", "/api/v1/checkout", buyer, `{"items":[{"sku":"TV","quantity":1},{"sku":"X","quantity":1}]}`, 422, "validation_failed"},
		{"zero units", "POST", "/api/v1/checkout", buyer, `{"items":[{"sku":"TV","quantity":0}]}`, 422, "validation_failed"},
		{"not JSON", "POST", "/api/v1/checkout", buyer, `items`, 422, "validation_failed"},
		{"product by a customer", "POST", "/api/v1/products", buyer, `{"sku":"Y","stock":1}`, 403, "forbidden"},
		{"unknown SKU", "GET", "/api/v1/inventory/NOPE", buyer, "", 404, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustDo(t, app, tc.method, tc.path, tc.token, "", tc.body)
			if a.status != tc.status || a.body["code"] != tc.code || a.header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("got %d %v (%s), want %d %s", a.status, a.body, a.header.Get("Content-Type"), tc.status, tc.code)
			}
		})
	}
	if a := mustDo(t, app, "GET", "/api/v1/inventory/TV", buyer, "", ""); a.body["available"] != 0.0 {
		t.Fatalf("refusals changed the stock: %v", a.body)
	}
}

func mustIssue(tb testing.TB, key []byte, role string) string {
	tb.Helper()
	tok, err := auth.Issue(key, "flashstock", "u", role, time.Hour, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

func TestHelloAnswersEverything(t *testing.T) {
	app := bare.Hello()
	for _, path := range []string{"/", "/api/v1/checkout"} {
		res, err := app.Test(httptest.NewRequest("POST", path, strings.NewReader(`{}`)), -1)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != "Hello, World!" {
			t.Fatalf("POST %s: got %d %q, want 200 Hello, World!", path, res.StatusCode, b)
		}
	}
}

// The bare handler as the suite runs it (Serve, its own listener, real connections),
// driven by the load tool: many concurrent buyers, then the tool's own invariants.
func TestServeBareUnderTheLoadTool(t *testing.T) {
	srv, _ := testredis.Start(t)
	port, err := redisserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"REDIS_URL": "redis://" + srv.Addr, "JWT_SECRET": string(secret), "PORT": strconv.Itoa(port)}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- bare.Serve(ctx, "bare", func(k string) string { return env[k] }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	mustBeReady(t, base, served)

	h, err := loadgen.NewHTTP(ctx, base, loadgen.HTTPOptions{Secret: secret, Users: 100, Conns: 32})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	for _, stock := range []int64{2000, 500} {
		r, err := loadgen.Run(ctx, h, loadgen.Config{Scenario: loadgen.Hot, Buyers: 2000, Stock: stock, Concurrency: 32}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Successes != stock || r.StockAfter != 0 || r.Refusals["out_of_stock"] != 2000-stock || len(r.Errors) != 0 {
			t.Fatalf("stock %d: sold %d, left %d, refused %v, errors %v %v; want all sold, the rest refused", stock, r.Successes, r.StockAfter, r.Refusals, r.Errors, r.ErrorSamples)
		}
		if r.Oversell != 0 || r.FalseRefusals != 0 || r.Unaccounted != 0 {
			t.Fatalf("stock %d: oversell %d, false refusals %d, unaccounted %d", stock, r.Oversell, r.FalseRefusals, r.Unaccounted)
		}
	}
}

// mustBeReady waits until base answers /readyz, or Serve has returned.
func mustBeReady(tb testing.TB, base string, served <-chan error) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if res, err := http.Get(base + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-served:
			tb.Fatalf("Serve returned before it was ready: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatal("not ready after 10 s")
		}
	}
}

func TestServeRefusesWhatItCannotServe(t *testing.T) {
	none := func(string) string { return "" }
	if err := bare.Serve(context.Background(), "flashstock", none); err == nil {
		t.Fatal("an unknown baseline was accepted")
	}
	if err := bare.Serve(context.Background(), "bare", none); err == nil {
		t.Fatal("the bare handler started without Redis and a secret")
	}
}
