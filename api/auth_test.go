package api_test

import (
	"encoding/base64"
	"net/http/httptest"
	"net/netip"
	"strconv"
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
		t.Run(name, func(t *testing.T) {
			r := h.do(t, "GET", "/api/v1/auth/me", tok, "")
			if r.status != 401 || r.code(t) != "unauthorized" {
				t.Errorf("got %d %s, want 401 unauthorized", r.status, r.body)
			}
		})
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
	// A taken email is not revealed: see TestRegisterDoesNotRevealTakenEmails.
	want(t, h.do(t, "POST", "/api/v1/auth/register", "", `{"email":"ann@example.com","password":"longenough"}`), 201, "")
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

// Registering a taken email answers exactly like registering a new one, and changes
// nothing: the account keeps its password and id.
func TestRegisterDoesNotRevealTakenEmails(t *testing.T) {
	h := newHarness(t, api.Config{})
	first := h.do(t, "POST", "/api/v1/auth/register", "", `{"email":"ann@example.com","password":"first-password","name":"Ann"}`)
	again := h.do(t, "POST", "/api/v1/auth/register", "", `{"email":"Ann@example.com","password":"other-password","name":"Ann"}`)
	fresh := h.do(t, "POST", "/api/v1/auth/register", "", `{"email":"bob@example.com","password":"first-password","name":"Ann"}`)
	for name, r := range map[string]resp{"first": first, "taken": again, "fresh": fresh} {
		want(t, r, 201, "")
		if ct := r.header.Get("Content-Type"); ct != first.header.Get("Content-Type") {
			t.Errorf("%s: content type %q, want %q", name, ct, first.header.Get("Content-Type"))
		}
		m := r.json(t)
		id, _ := m["id"].(string)
		if len(m) != 4 || len(id) != len(first.json(t)["id"].(string)) || m["role"] != "customer" || m["name"] != "Ann" {
			t.Errorf("%s: %s, want the shape of %s", name, r.body, first.body)
		}
	}
	if a, b := first.json(t), again.json(t); a["email"] != b["email"] || a["id"] == b["id"] {
		t.Fatalf("taken email: %s after %s; want the same email and a fresh id", again.body, first.body)
	}
	// Nothing changed: the first password still works, the second does not.
	want(t, h.do(t, "POST", "/api/v1/auth/login", "", `{"email":"ann@example.com","password":"other-password"}`), 401, "unauthorized")
	r := h.do(t, "POST", "/api/v1/auth/login", "", `{"email":"ann@example.com","password":"first-password"}`)
	want(t, r, 200, "")
	me := h.do(t, "GET", "/api/v1/auth/me", r.json(t)["accessToken"].(string), "")
	if me.json(t)["id"] != first.json(t)["id"] {
		t.Fatalf("the account's id changed: %s, want %s", me.body, first.body)
	}
}

// bcrypt reads 72 bytes: a longer password is refused, on register and on login, rather
// than silently cut. Bytes, not characters.
func TestPasswordsAreEightTo72Bytes(t *testing.T) {
	h := newHarness(t, api.Config{})
	p72 := strings.Repeat("é", 36) // 72 bytes, 36 characters
	p73 := p72 + "x"
	body := func(email, pw string) string { return `{"email":"` + email + `","password":"` + pw + `"}` }
	r := h.do(t, "POST", "/api/v1/auth/register", "", body("long@example.com", p73))
	want(t, r, 400, "validation_failed")
	if f := r.json(t)["field"]; f != "password" {
		t.Fatalf("field: got %v, want password", f)
	}
	want(t, h.do(t, "POST", "/api/v1/auth/register", "", body("short@example.com", "seven77")), 400, "validation_failed")
	want(t, h.do(t, "POST", "/api/v1/auth/register", "", body("long@example.com", p72)), 201, "")
	want(t, h.do(t, "POST", "/api/v1/auth/login", "", body("long@example.com", p72)), 200, "")
	// The same 72 bytes and one more: refused, not logged in on the first 72.
	want(t, h.do(t, "POST", "/api/v1/auth/login", "", body("long@example.com", p73)), 400, "validation_failed")
}

// wantRateLimited checks a 429 rate_limited with a Retry-After of whole seconds.
func wantRateLimited(t *testing.T, r resp) {
	t.Helper()
	want(t, r, 429, "rate_limited")
	if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 1 {
		t.Fatalf("Retry-After: %q, want a number of seconds >= 1", r.header.Get("Retry-After"))
	}
}

// Every login and register request counts against the client's address, whatever its
// outcome; other addresses keep theirs. Behind a trusted proxy the client is the
// nearest untrusted X-Forwarded-For hop.
func TestAuthIsThrottledPerAddress(t *testing.T) {
	// A window of an hour: nothing comes back while the test runs, however slow.
	h := newHarness(t, api.Config{LoginAddressLimit: 4, LoginWindow: time.Hour,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("10.0.0.0/8")}})
	from := func(addr string) []string { return []string{"X-Forwarded-For", addr} }
	login := `{"email":"nobody@example.com","password":"wrong-password"}`
	want(t, h.do(t, "POST", "/api/v1/auth/login", "", login, from("203.0.113.7")...), 401, "unauthorized")
	want(t, h.do(t, "POST", "/api/v1/auth/register", "", `{"email":"x@example.com","password":"longenough"}`, from("203.0.113.7")...), 201, "")
	want(t, h.do(t, "POST", "/api/v1/auth/login", "", `{not json`, from("203.0.113.7")...), 400, "validation_failed")
	// Through a second trusted proxy, with a forged hop on the left, with a port: still
	// 203.0.113.7.
	want(t, h.do(t, "POST", "/api/v1/auth/login", "", login, from("198.51.100.1, 203.0.113.7:5555, 10.1.2.3")...), 401, "unauthorized")
	wantRateLimited(t, h.do(t, "POST", "/api/v1/auth/login", "", login, from("203.0.113.7")...))
	wantRateLimited(t, h.do(t, "POST", "/api/v1/auth/register", "", `{"email":"y@example.com","password":"longenough"}`, from("203.0.113.7")...))
	// Another address, on another replica (the counters live in Redis).
	want(t, h.replica().do(t, "POST", "/api/v1/auth/login", "", login, from("203.0.113.8")...), 401, "unauthorized")
	wantRateLimited(t, h.replica().do(t, "POST", "/api/v1/auth/login", "", login, from("203.0.113.7")...))
	// IPv6 clients are limited by /64.
	for i := range 4 {
		want(t, h.do(t, "POST", "/api/v1/auth/login", "", login, from("2001:db8:1:2::"+strconv.Itoa(i+1))...), 401, "unauthorized")
	}
	wantRateLimited(t, h.do(t, "POST", "/api/v1/auth/login", "", login, from("2001:db8:1:2:ffff::9")...))

	// Without trusted proxies, X-Forwarded-For is the client's own say: ignored.
	direct := newHarness(t, api.Config{LoginAddressLimit: 2, LoginWindow: time.Hour})
	want(t, direct.do(t, "POST", "/api/v1/auth/login", "", login, from("192.0.2.1")...), 401, "unauthorized")
	want(t, direct.do(t, "POST", "/api/v1/auth/login", "", login, from("192.0.2.2")...), 401, "unauthorized")
	wantRateLimited(t, direct.do(t, "POST", "/api/v1/auth/login", "", login, from("192.0.2.3")...))
}

// Failed logins count against the email, successes do not; over the limit even the
// right password is refused until the window lets one more through.
func TestLoginFailuresAreThrottledPerEmail(t *testing.T) {
	h := newHarness(t, api.Config{LoginLimit: 3, LoginWindow: time.Hour})
	want(t, h.do(t, "POST", "/api/v1/auth/register", "", `{"email":"ann@example.com","password":"right-password"}`), 201, "")
	right := `{"email":"ann@example.com","password":"right-password"}`
	wrong := `{"email":"ANN@example.com","password":"wrong-password"}`
	// register counted one; each attempt takes one and a success gives it back, so any
	// number of successes fit beside two failures.
	want(t, h.do(t, "POST", "/api/v1/auth/login", "", wrong), 401, "unauthorized")
	for range 4 {
		want(t, h.do(t, "POST", "/api/v1/auth/login", "", right), 200, "")
	}
	want(t, h.do(t, "POST", "/api/v1/auth/login", "", wrong), 401, "unauthorized")
	// 3 counted (the registration and two failures): the next attempt is over the limit.
	wantRateLimited(t, h.do(t, "POST", "/api/v1/auth/login", "", right))
	wantRateLimited(t, h.do(t, "POST", "/api/v1/auth/login", "", wrong))
	// Another email is not affected, nor is an unknown one distinguishable by its limit.
	want(t, h.do(t, "POST", "/api/v1/auth/login", "", `{"email":"bob@example.com","password":"wrong-password"}`), 401, "unauthorized")
}
