package api_test

import (
	"encoding/base64"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashstock/flashstock/api"
)

func TestTokensThatMustBeRefused(t *testing.T) {
	h := newHarness(t, api.Config{})
	sign := func(key []byte, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Now()
	good := jwt.MapClaims{"sub": "u1", "role": "customer", "iss": issuer, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range good {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	cases := map[string]string{
		"missing":         "",
		"garbled":         "not.a.jwt",
		"alg none":        b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(`{"sub":"u1","role":"admin","iss":"flashstock","exp":9999999999}`) + ".",
		"other secret":    sign([]byte("another-secret-another-secret-12345"), good),
		"wrong issuer":    sign(secret, with("iss", "someone-else")),
		"expired":         sign(secret, with("exp", now.Add(-time.Minute).Unix())),
		"no expiry":       sign(secret, with("exp", nil)),
		"unknown role":    sign(secret, with("role", "root")),
		"no subject":      sign(secret, with("sub", nil)),
		"HS384 not HS256": func() string { s, _ := jwt.NewWithClaims(jwt.SigningMethodHS384, good).SignedString(secret); return s }(),
		"truncated sig":   strings.TrimSuffix(sign(secret, good), "A") + "x",
	}
	for name, tok := range cases {
		r := h.do(t, "GET", "/api/v1/auth/me", tok, "")
		if r.status != 401 || r.code(t) != "unauthorized" {
			t.Errorf("%s: got %d %s, want 401 unauthorized", name, r.status, r.body)
		}
	}
	r := h.do(t, "GET", "/api/v1/auth/me", sign(secret, good), "")
	want(t, r, 200, "")
	if m := r.json(t); m["id"] != "u1" || m["role"] != "customer" {
		t.Fatalf("me: %s", r.body)
	}
}

func TestRegisterLoginAndRoles(t *testing.T) {
	h := newHarness(t, api.Config{})
	r := h.do(t, "POST", "/api/v1/auth/register", "", `{"email":"Ann@Example.com","password":"longenough","name":"Ann"}`)
	want(t, r, 201, "")
	if m := r.json(t); m["role"] != "customer" || m["email"] != "ann@example.com" || m["id"] == "" {
		t.Fatalf("register: %s", r.body)
	}
	// The role is never taken from the body: a body that tries is refused outright.
	want(t, h.do(t, "POST", "/api/v1/auth/register", "", `{"email":"eve@example.com","password":"longenough","role":"admin"}`), 400, "validation_failed")
	want(t, h.do(t, "POST", "/api/v1/auth/register", "", `{"email":"ann@example.com","password":"longenough"}`), 409, "already_exists")
	want(t, h.do(t, "POST", "/api/v1/auth/register", "", `{"email":"bob@example.com","password":"short"}`), 400, "validation_failed")
	want(t, h.do(t, "POST", "/api/v1/auth/register", "", `{"email":"nope","password":"longenough"}`), 400, "validation_failed")

	r = h.do(t, "POST", "/api/v1/auth/login", "", `{"email":"ann@example.com","password":"longenough"}`)
	want(t, r, 200, "")
	m := r.json(t)
	if m["tokenType"] != "Bearer" || m["expiresIn"].(float64) != 3600 {
		t.Fatalf("login: %s", r.body)
	}
	me := h.do(t, "GET", "/api/v1/auth/me", m["accessToken"].(string), "")
	want(t, me, 200, "")
	if me.json(t)["role"] != "customer" {
		t.Fatalf("me: %s", me.body)
	}
	// A customer on an admin route.
	want(t, h.do(t, "POST", "/api/v1/admin/reconcile", m["accessToken"].(string), ""), 403, "forbidden")

	// Wrong password and unknown email answer alike.
	a := h.do(t, "POST", "/api/v1/auth/login", "", `{"email":"ann@example.com","password":"wrong-password"}`)
	b := h.do(t, "POST", "/api/v1/auth/login", "", `{"email":"nobody@example.com","password":"wrong-password"}`)
	want(t, a, 401, "unauthorized")
	want(t, b, 401, "unauthorized")
	am, bm := a.json(t), b.json(t)
	if am["detail"] != bm["detail"] || am["title"] != bm["title"] || len(am) != len(bm) {
		t.Fatalf("login answers differ:\n%s\n%s", a.body, b.body)
	}
}

// Verified tokens are remembered, but only the exact token, and only while it is valid.
func TestTokenCacheKeepsTheRules(t *testing.T) {
	h := newHarness(t, api.Config{})
	now := time.Now()
	clock := &now
	app := api.New(h.cfg, api.Deps{Inv: h.inv, Store: h.st, Now: func() time.Time { return *clock }})
	tok, err := api.IssueToken(secret, issuer, "u1", api.RoleCustomer, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	me := func(tok string) int {
		req := httptest.NewRequest("GET", "/api/v1/auth/me", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := app.Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for range 3 {
		if got := me(tok); got != 200 {
			t.Fatalf("valid token: %d", got)
		}
	}
	// A cached token's look-alike with another signature is not the cached token.
	if got := me(tok[:len(tok)-2] + "AA"); got != 401 {
		t.Fatalf("tampered signature after caching: %d", got)
	}
	later := now.Add(time.Hour + time.Second)
	clock = &later
	if got := me(tok); got != 401 {
		t.Fatalf("expired token served from the cache: %d", got)
	}
}
