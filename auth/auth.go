// Package auth issues and verifies flashstock's access tokens: JWTs signed with HS256
// carrying the user (sub), the role, the issuer (iss), and when the token was issued
// (iat) and expires (exp).
//
// It depends on nothing else in flashstock, so both the server (package api) and the
// load tool (package loadgen), which mints tokens for its synthetic buyers, can use it
// without one depending on the other.
package auth

import (
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Roles.
const (
	RoleCustomer = "customer"
	RoleAdmin    = "admin"
)

// ErrInvalid is returned by Verify for every token it refuses: a bad signature, another
// algorithm (alg none included), a wrong or missing issuer, a missing or past expiry, a
// token not valid yet, no subject, or an unknown role. The cause is wrapped, for logs;
// a client must be told no more than "unauthorized".
var ErrInvalid = errors.New("auth: invalid token")

// Claims are a token's claims.
type Claims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

// Principal is the caller a verified token names.
type Principal struct {
	UserID string
	Role   string
	// Expires is when the token stops being valid; NotBefore, if not zero, when it starts.
	Expires, NotBefore time.Time
}

// Issue signs a token for userID with role, valid for ttl from now.
func Issue(secret []byte, issuer, userID, role string, ttl time.Duration, now time.Time) (string, error) {
	c := Claims{Role: role, RegisteredClaims: jwt.RegisteredClaims{
		Subject: userID, Issuer: issuer, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}

// Verify checks a raw token (without "Bearer "): signed with secret by HS256 and no
// other algorithm, issued by issuer, with an expiry that now has not reached, a subject
// and a known role. Every refusal is ErrInvalid. Verify is safe for concurrent use.
func Verify(raw string, secret []byte, issuer string, now time.Time) (Principal, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(raw, &c, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithIssuer(issuer),
		jwt.WithExpirationRequired(), jwt.WithTimeFunc(func() time.Time { return now }))
	switch {
	case err != nil:
		return Principal{}, errors.Join(ErrInvalid, err)
	case c.Subject == "":
		return Principal{}, errors.Join(ErrInvalid, errors.New("no subject"))
	case c.Role != RoleCustomer && c.Role != RoleAdmin:
		return Principal{}, errors.Join(ErrInvalid, errors.New("unknown role"))
	}
	p := Principal{UserID: c.Subject, Role: c.Role, Expires: c.ExpiresAt.Time}
	if c.NotBefore != nil {
		p.NotBefore = c.NotBefore.Time
	}
	return p, nil
}
