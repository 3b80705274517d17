package api

import (
	"context"
	"errors"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/flashstock/flashstock/api/codes"
	"github.com/flashstock/flashstock/auth"
	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/store"
)

// The roles a token may carry (package auth).
const (
	RoleCustomer = auth.RoleCustomer
	RoleAdmin    = auth.RoleAdmin
)

// verify checks a bearer token with the auth package's rules (HS256 only, the right
// issuer, not expired, a subject and a known role) and this API's own: a subject that
// is a valid user id.
func (s *server) verify(header string) (auth.Principal, error) {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return auth.Principal{}, errUnauthorized
	}
	p, err := s.tokens.Verify(raw, s.now())
	if err != nil || !engine.ValidKey(p.UserID) {
		return auth.Principal{}, errUnauthorized
	}
	return p, nil
}

// authenticate is the middleware on every /api/v1 route but register and login.
// The live view also takes the token as ?token=, since a browser's EventSource cannot
// send headers.
func (s *server) authenticate(c *fiber.Ctx) error {
	header := c.Get(fiber.HeaderAuthorization)
	if header == "" && c.Path() == livePath {
		if tok := c.Query("token"); tok != "" {
			header = "Bearer " + tok
		}
	}
	p, err := s.verify(header)
	if err != nil {
		return err
	}
	c.Locals(localPrincipal, p)
	return c.Next()
}

func adminOnly(c *fiber.Ctx) error {
	if principal(c).Role != RoleAdmin {
		return errForbidden
	}
	return c.Next()
}

func principal(c *fiber.Ctx) auth.Principal {
	p, _ := c.Locals(localPrincipal).(auth.Principal)
	return p
}

type credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Name     string `json:"name"`
}

type userView struct {
	ID    string `json:"id"`
	Email string `json:"email,omitempty"`
	Name  string `json:"name,omitempty"`
	Role  string `json:"role"`
}

// register creates a customer. Its answer does not tell whether the email already had
// an account: for a taken email it answers the same 201 {id, email, name, role} after the
// same work (the password is hashed either way), but creates and changes nothing; the
// id it shows is fresh and names no account, and logging in with that password fails.
// Requests count against the caller's address and the email (see throttle.go).
func (s *server) register(c *fiber.Ctx) error {
	if err := s.throttleAddress(c); err != nil {
		return err
	}
	var in credentials
	if _, err := decodeStrict(c.Body(), &in, false); err != nil {
		return err
	}
	email := store.NormalizeEmail(in.Email)
	switch {
	case !validEmail(email):
		return validation("email", "must be an email address")
	case len(in.Name) > 200:
		return validation("name", "must be at most 200 characters")
	}
	if err := checkPassword(in.Password); err != nil {
		return err
	}
	if err := s.inv.Throttle(c.UserContext(), scopeAuthEmail, email, s.emailLimit()); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(in.Password), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	u := store.User{Email: email, ID: engine.NewID(), Name: in.Name, PasswordHash: string(hash), Role: RoleCustomer}
	if err := s.store.CreateUser(c.UserContext(), u); err != nil && !errors.Is(err, engine.ErrAlreadyExists) {
		return err
	}
	return c.Status(http.StatusCreated).JSON(userView{ID: u.ID, Email: u.Email, Name: u.Name, Role: u.Role})
}

// checkPassword enforces the contract's 8 to 72 bytes: bcrypt reads no further than 72,
// so a longer password would share its hash with its first 72 bytes.
func checkPassword(p string) error {
	if len(p) < 8 || len(p) > 72 {
		return validation("password", "must be 8 to 72 bytes")
	}
	return nil
}

// dummyHash is compared against when the email is unknown, so login takes as long
// either way.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("flashstock-no-such-user"), bcrypt.DefaultCost)

// login issues a token. Every request counts against the caller's address; each
// attempt counts against the email first and is given back when it succeeds, so only
// failures use up the email's allowance, and concurrent guesses cannot overrun it.
func (s *server) login(c *fiber.Ctx) error {
	if err := s.throttleAddress(c); err != nil {
		return err
	}
	var in credentials
	if _, err := decodeStrict(c.Body(), &in, false); err != nil {
		return err
	}
	if in.Name != "" {
		return validation("name", "unknown field")
	}
	if err := checkPassword(in.Password); err != nil {
		return err
	}
	email := store.NormalizeEmail(in.Email)
	ctx := c.UserContext()
	if err := s.inv.Throttle(ctx, scopeAuthEmail, email, s.emailLimit()); err != nil {
		return err
	}
	failed := false
	defer func() {
		if failed {
			return
		}
		// Not a wrong password (a success, or our own error): it does not count.
		if err := s.inv.Unthrottle(context.WithoutCancel(ctx), scopeAuthEmail, email, s.emailLimit()); err != nil {
			reqLog(c, s.log).Warn("login: could not give back the attempt", "err", err)
		}
	}()
	u, err := s.store.UserByEmail(ctx, email)
	hash := []byte(u.PasswordHash)
	if errors.Is(err, engine.ErrNotFound) {
		hash = dummyHash
	} else if err != nil {
		return err
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(in.Password)) != nil || u.ID == "" {
		failed = true
		return problem(http.StatusUnauthorized, codes.Unauthorized, "email or password is wrong")
	}
	tok, err := auth.Issue(s.cfg.JWTSecret, s.cfg.JWTIssuer, u.ID, u.Role, s.cfg.TokenTTL, s.now())
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"accessToken": tok, "tokenType": "Bearer", "expiresIn": int64(s.cfg.TokenTTL / time.Second)})
}

func (s *server) me(c *fiber.Ctx) error {
	p := principal(c)
	return c.JSON(userView{ID: p.UserID, Role: p.Role})
}

// validEmail accepts a bare address (no display name) of at most 254 characters whose
// domain has a dot.
func validEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && a.Name == "" && len(s) <= 254 && strings.Contains(s[strings.LastIndexByte(s, '@'):], ".")
}
