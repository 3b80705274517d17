package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"time"

	json "github.com/goccy/go-json"
	"github.com/valyala/fasthttp"

	"github.com/flashstock/flashstock/auth"
	"github.com/flashstock/flashstock/engine"
)

// HTTPOptions say how to reach and authenticate against a running server.
type HTTPOptions struct {
	// Secret, if set, is the server's JWT_SECRET: tokens are minted locally for Users
	// synthetic buyers and an admin. Without it the tool logs in the demo accounts
	// (SEED_DEMO): admin@example.com and customer1…customerN (N ≤ 1000).
	Secret []byte
	Issuer string // default "flashstock"
	Users  int    // buyer identities (default 1000)
	// Conns caps connections to the server (default 256).
	Conns int
	// Timeout bounds each request (default 10 s).
	Timeout time.Duration
}

// HTTP drives a running server through the public contract (api.md).
type HTTP struct {
	base    *url.URL
	hc      *fasthttp.HostClient
	tokens  [][]byte // "Bearer …" per buyer identity
	admin   []byte
	timeout time.Duration
}

// NewHTTP prepares the identities the run will use.
func NewHTTP(ctx context.Context, baseURL string, o HTTPOptions) (*HTTP, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Host == "" || u.Scheme != "http" {
		return nil, fmt.Errorf("server URL %q: want http://host:port", baseURL)
	}
	if o.Issuer == "" {
		o.Issuer = "flashstock"
	}
	if o.Users <= 0 {
		o.Users = 1000
	}
	if o.Conns <= 0 {
		o.Conns = 256
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	h := &HTTP{base: u, timeout: o.Timeout, hc: &fasthttp.HostClient{
		Addr: u.Host, Name: "flashstock-bench", MaxConns: o.Conns,
		ReadTimeout: o.Timeout, WriteTimeout: o.Timeout, MaxConnWaitTimeout: o.Timeout,
		MaxIdleConnDuration: time.Minute,
	}}
	if len(o.Secret) > 0 {
		now := time.Now()
		tok, err := auth.Issue(o.Secret, o.Issuer, "bench-admin", auth.RoleAdmin, 24*time.Hour, now)
		if err != nil {
			return nil, err
		}
		h.admin = bearer(tok)
		for i := range o.Users {
			tok, err := auth.Issue(o.Secret, o.Issuer, userID(i), auth.RoleCustomer, 24*time.Hour, now)
			if err != nil {
				return nil, err
			}
			h.tokens = append(h.tokens, bearer(tok))
		}
		return h, nil
	}
	if h.admin, err = h.login(ctx, "admin@example.com", "admin12345"); err != nil {
		return nil, fmt.Errorf("log in as the demo admin (or pass the JWT secret): %w", err)
	}
	h.tokens = make([][]byte, min(o.Users, 1000))
	var wg sync.WaitGroup
	errs := make([]error, len(h.tokens))
	sem := make(chan struct{}, 16)
	for i := range h.tokens {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			h.tokens[i], errs[i] = h.login(ctx, fmt.Sprintf("customer%d@example.com", i+1), "customer12345")
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("log in the demo customers: %w", err)
	}
	return h, nil
}

func bearer(tok string) []byte { return []byte("Bearer " + tok) }

// Name implements Target.
func (*HTTP) Name() string { return "http" }

// Close releases the client's idle connections.
func (h *HTTP) Close() error { h.hc.CloseIdleConnections(); return nil }

func (h *HTTP) login(ctx context.Context, email, password string) ([]byte, error) {
	body, _ := json.Marshal(map[string]string{"email": email, "password": password})
	status, resp, err := h.do(ctx, "POST", "/api/v1/auth/login", nil, "", body)
	if err != nil {
		return nil, err
	}
	if status != fasthttp.StatusOK {
		return nil, fmt.Errorf("login %s: %d %s", email, status, resp)
	}
	var out struct{ AccessToken string }
	if err := json.Unmarshal(resp, &out); err != nil {
		return nil, err
	}
	return bearer(out.AccessToken), nil
}

// do sends one request and returns the status and a copy of the body.
func (h *HTTP) do(ctx context.Context, method, path string, auth []byte, key string, body []byte) (int, []byte, error) {
	return h.doPass(ctx, method, path, auth, key, "", body)
}

// doPass is do with a Queue-Pass header (none if pass is empty).
func (h *HTTP) doPass(ctx context.Context, method, path string, auth []byte, key, pass string, body []byte) (int, []byte, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(path)
	req.Header.SetHost(h.base.Host)
	if auth != nil {
		req.Header.SetBytesV(fasthttp.HeaderAuthorization, auth)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if pass != "" {
		req.Header.Set("Queue-Pass", pass)
	}
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(body)
	}
	timeout := h.timeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if err := h.hc.DoTimeout(req, resp, timeout); err != nil {
		return 0, nil, err
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...), nil
}

func (h *HTTP) token(buyer int) []byte { return h.tokens[buyer%len(h.tokens)] }

// Identities is how many distinct buyers the target can act as.
func (h *HTTP) Identities() int { return len(h.tokens) }

// Prepare implements Target.
func (h *HTTP) Prepare(ctx context.Context, stock map[string]int64) error {
	for sku, n := range stock {
		body, _ := json.Marshal(map[string]any{"sku": sku, "name": "bench " + sku, "price": 1999, "currency": "USD", "stock": n})
		status, resp, err := h.do(ctx, "POST", "/api/v1/products", h.admin, "", body)
		if err != nil {
			return err
		}
		if status != fasthttp.StatusCreated {
			return fmt.Errorf("create %s: %d %s", sku, status, resp)
		}
	}
	return nil
}

// Levels implements Target.
func (h *HTTP) Levels(ctx context.Context, skus []string) (map[string]engine.Level, error) {
	out := make(map[string]engine.Level, len(skus))
	for _, sku := range skus {
		status, resp, err := h.do(ctx, "GET", "/api/v1/inventory/"+url.PathEscape(sku), h.admin, "", nil)
		if err != nil {
			return nil, err
		}
		if status != fasthttp.StatusOK {
			return nil, fmt.Errorf("inventory %s: %d %s", sku, status, resp)
		}
		var lv engine.Level
		if err := json.Unmarshal(resp, &lv); err != nil {
			return nil, err
		}
		out[sku] = lv
	}
	return out, nil
}

// itemsBody renders {"items":[…]}, the body of checkouts and holds.
func itemsBody(lines []engine.Line) []byte {
	b, _ := json.Marshal(struct {
		Items []engine.Line `json:"items"`
	}{lines})
	return b
}

// Checkout implements Target: a buy-now checkout of every line in one request.
func (h *HTTP) Checkout(ctx context.Context, buyer int, key string, lines []engine.Line) Answer {
	return h.answer(h.do(ctx, "POST", "/api/v1/checkout", h.token(buyer), key, itemsBody(lines)))
}

// Reserve implements Holder.
func (h *HTTP) Reserve(ctx context.Context, buyer int, key string, lines []engine.Line) Answer {
	return h.answer(h.do(ctx, "POST", "/api/v1/holds", h.token(buyer), key, itemsBody(lines)))
}

// Commit implements Holder.
func (h *HTTP) Commit(ctx context.Context, buyer int, holdID, key string) Answer {
	if key != "" {
		key += "-c"
	}
	return h.answer(h.do(ctx, "POST", "/api/v1/holds/"+holdID+"/commit", h.token(buyer), key, nil))
}

// Cancel implements Canceller.
func (h *HTTP) Cancel(ctx context.Context, buyer int, orderID string) Answer {
	return h.answer(h.do(ctx, "POST", "/api/v1/orders/"+orderID+"/cancel", h.token(buyer), "", nil))
}

// policyRefusals are answers that refuse by rule; any other 4xx is a failure.
var policyRefusals = map[string]bool{
	"out_of_stock": true, "purchase_limit_exceeded": true, "sale_not_active": true, "rate_limited": true,
	"queue_pass_required": true,
}

func (h *HTTP) answer(status int, body []byte, err error) Answer {
	if err != nil {
		if errors.Is(err, fasthttp.ErrTimeout) {
			return failed("timeout", err)
		}
		return failed(ReasonTransport, err)
	}
	if status >= 200 && status < 300 {
		var v struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(body, &v); err != nil || v.ID == "" {
			return failed("bad_body", fmt.Errorf("%d %s", status, body))
		}
		return Answer{Outcome: OK, ID: v.ID}
	}
	var p struct {
		Code  string            `json:"code"`
		Items []engine.Shortage `json:"items"`
	}
	if err := json.Unmarshal(body, &p); err != nil || p.Code == "" {
		return failed(strconv.Itoa(status), fmt.Errorf("%d %s", status, body))
	}
	if policyRefusals[p.Code] {
		return Answer{Outcome: Refused, Reason: p.Code, Short: p.Items}
	}
	return failed(p.Code, fmt.Errorf("%d %s", status, body))
}

// Admin makes an admin request (the tool's admin token) and returns the status and body.
func (h *HTTP) Admin(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	return h.do(ctx, method, path, h.admin, "", body)
}
