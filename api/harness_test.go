package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/api"
	"github.com/flashstock/flashstock/auth"
	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testmongo"
	"github.com/flashstock/flashstock/internal/testredis"
	"github.com/flashstock/flashstock/store"
	stocksync "github.com/flashstock/flashstock/sync"
)

func TestMain(m *testing.M) { os.Exit(testmongo.Main(m)) }

var secret = []byte("test-secret-test-secret-test-secret!")

const issuer = "flashstock"

type harness struct {
	app *fiber.App
	inv *engine.Redis
	st  *store.Store
	rdb *redis.Client
	srv *testredis.Server
	cfg api.Config
}

func newHarness(t testing.TB, cfg api.Config) *harness {
	t.Helper()
	return newHarnessLogging(t, cfg, nil)
}

func newHarnessLogging(t testing.TB, cfg api.Config, log *slog.Logger) *harness {
	t.Helper()
	srv, rdb := testredis.Start(t)
	inv := engine.NewRedis(rdb, engine.Options{})
	t.Cleanup(inv.Close)
	st := store.New(testmongo.Database(t))
	if err := st.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg.JWTSecret, cfg.JWTIssuer = secret, issuer
	app := api.New(cfg, api.Deps{Inv: inv, Store: st, Logger: log,
		Reconciler: &stocksync.Reconciler{Inv: inv, Store: st, Wait: time.Second}})
	return &harness{app: app, inv: inv, st: st, rdb: rdb, srv: srv, cfg: cfg}
}

// replica is another API process on the same Redis and MongoDB.
func (h *harness) replica() *harness {
	r := *h
	r.app = api.New(h.cfg, api.Deps{Inv: h.inv, Store: h.st, Reconciler: &stocksync.Reconciler{Inv: h.inv, Store: h.st}})
	return &r
}

// runSyncer persists the outbox to MongoDB until the test ends.
func (h *harness) runSyncer(t testing.TB) *stocksync.Syncer {
	t.Helper()
	sy := stocksync.NewSyncer(h.inv, h.st, stocksync.SyncerOptions{Block: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = sy.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return sy
}

func token(t testing.TB, user, role string) string {
	t.Helper()
	tok, err := auth.Issue(secret, issuer, user, role, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %s", r.body)
	}
	return m
}

// code is the problem code of an error answer (checking its content type).
func (r resp) code(t testing.TB) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("error content type: got %q, want application/problem+json (status %d, body %s)", ct, r.status, r.body)
	}
	c, _ := r.json(t)["code"].(string)
	return c
}

// do sends a request through the real router. headers are name, value pairs.
func (h *harness) do(t testing.TB, method, path, tok, body string, headers ...string) resp {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := h.app.Test(req, -1)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// overHTTP sends a request to the app served on a real loopback listener, over a raw
// connection: what fasthttp itself refuses (an oversized body) is only visible there,
// and it answers before the body is sent, so the body is offered but not written.
func (h *harness) overHTTP(t testing.TB, method, path, tok, body string) resp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = h.app.Listener(ln) }()
	t.Cleanup(func() { _ = h.app.Shutdown() })
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"+
		"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", method, path, tok, len(body))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func want(t testing.TB, r resp, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status: got %d, want %d (body %s)", r.status, status, r.body)
	}
	if code != "" {
		if got := r.code(t); got != code {
			t.Fatalf("code: got %q, want %q (body %s)", got, code, r.body)
		}
	}
}

// product creates a SKU through the admin API.
func (h *harness) product(t testing.TB, sku string, stock int, extra string) {
	t.Helper()
	body := `{"sku":"` + sku + `","name":"` + sku + `","price":500,"currency":"USD","stock":` + itoa(stock) + extra + `}`
	want(t, h.do(t, "POST", "/api/v1/products", token(t, "root", api.RoleAdmin), body), 201, "")
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func (h *harness) available(t testing.TB, sku string) float64 {
	t.Helper()
	r := h.do(t, "GET", "/api/v1/inventory/"+sku, token(t, "any", api.RoleCustomer), "")
	want(t, r, 200, "")
	return r.json(t)["available"].(float64)
}

// wantCancelledOnce cancels order id three times under one key, as its owner c1 after
// another customer is refused: the first answer cancels, the others replay it, and all
// 10 units of A are available again.
func (h *harness) wantCancelledOnce(t *testing.T, id, c1 string) {
	t.Helper()
	want(t, h.do(t, "POST", "/api/v1/orders/"+id+"/cancel", token(t, "c2", api.RoleCustomer), ""), 404, "not_found")
	for i := range 3 {
		r := h.do(t, "POST", "/api/v1/orders/"+id+"/cancel", c1, "", "Idempotency-Key", "c-1")
		want(t, r, 200, "")
		if r.json(t)["status"] != "cancelled" || (i > 0) != (r.header.Get("Idempotent-Replayed") == "true") {
			t.Fatalf("cancel %d: %v %s", i, r.header, r.body)
		}
	}
	if got := h.available(t, "A"); got != 10 {
		t.Fatalf("available after cancels: got %v, want 10", got)
	}
}
