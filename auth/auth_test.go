package auth_test

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashstock/flashstock/auth"
)

var (
	secret = []byte("0123456789abcdef0123456789abcdef")
	now    = time.Unix(1_800_000_000, 0)
)

// Issue writes the same token, byte for byte, as api.IssueToken did: same claims (role,
// iss, sub, exp, iat, in that order), same header, same signature. The golden string was
// made by api.IssueToken with these inputs.
func TestIssueMatchesTheServersTokens(t *testing.T) {
	const want = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoiY3VzdG9tZXIiLCJpc3MiOiJmbGFzaHN0b2NrIiwic3ViIjoidXNlci0xIiwiZXhwIjoxODAwMDAzNjAwLCJpYXQiOjE4MDAwMDAwMDB9.U9CqbZWpBuhstKrz9TpY1z2cevz3ITC_GmyPR7AB6F4"
	got, err := auth.Issue(secret, "flashstock", "user-1", auth.RoleCustomer, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestVerifyAcceptsIssuedTokens(t *testing.T) {
	for _, role := range []string{auth.RoleCustomer, auth.RoleAdmin} {
		tok, err := auth.Issue(secret, "flashstock", "user-7", role, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		p, err := auth.Verify(tok, secret, "flashstock", now.Add(59*time.Minute))
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		if p.UserID != "user-7" || p.Role != role || !p.Expires.Equal(now.Add(time.Hour)) || !p.NotBefore.IsZero() {
			t.Fatalf("got %+v, want user-7 %s expiring %v", p, role, now.Add(time.Hour))
		}
	}
}

// sign makes a token with any claims and method, for the refusals.
func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyRefuses(t *testing.T) {
	good := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "u", "role": "customer", "iss": "flashstock", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	valid := sign(t, jwt.SigningMethodHS256, secret, good())
	for _, tc := range []struct {
		name, token string
		at          time.Time
	}{
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another secret of at least 32 bytes"), good()), now},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good()), now},
		{"HS512", sign(t, jwt.SigningMethodHS512, secret, good()), now},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, secret, with("iss", "someone-else")), now},
		{"no issuer", sign(t, jwt.SigningMethodHS256, secret, with("iss", nil)), now},
		{"no expiry", sign(t, jwt.SigningMethodHS256, secret, with("exp", nil)), now},
		{"expired", valid, now.Add(time.Hour + time.Second)},
		{"not valid yet", sign(t, jwt.SigningMethodHS256, secret, with("nbf", now.Add(time.Minute).Unix())), now},
		{"no subject", sign(t, jwt.SigningMethodHS256, secret, with("sub", nil)), now},
		{"unknown role", sign(t, jwt.SigningMethodHS256, secret, with("role", "root")), now},
		{"no role", sign(t, jwt.SigningMethodHS256, secret, with("role", nil)), now},
		{"tampered", valid[:len(valid)-2] + "xx", now},
		{"not a token", "hello", now},
		{"empty", "", now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := auth.Verify(tc.token, secret, "flashstock", tc.at)
			if !errors.Is(err, auth.ErrInvalid) {
				t.Fatalf("got %+v, %v; want ErrInvalid", p, err)
			}
		})
	}
	// The control: the same valid token passes at the same moment.
	if _, err := auth.Verify(valid, secret, "flashstock", now); err != nil {
		t.Fatalf("the valid token was refused: %v", err)
	}
}
