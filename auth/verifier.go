package auth

import (
	"strings"
	"sync"
	"time"
)

// Verifier verifies the tokens of one secret and issuer, and remembers the ones that
// verified, so that a buyer's next request costs a map lookup instead of a JSON decode
// and an HMAC. The cache is keyed by the whole token, signature included, so only the
// exact string that verified can hit, and each hit re-checks the token's time window.
// It holds at most max entries and starts over when full: a flash sale's buyers each
// send many requests, so the hit rate stays high while the memory stays bounded.
// A Verifier is safe for concurrent use.
type Verifier struct {
	secret []byte
	issuer string

	mu  sync.RWMutex
	m   map[string]Principal
	max int
}

// NewVerifier verifies tokens signed with secret by issuer, remembering up to max.
func NewVerifier(secret []byte, issuer string, max int) *Verifier {
	return &Verifier{secret: secret, issuer: issuer, m: make(map[string]Principal), max: max}
}

// Verify is Verify with the verifier's secret and issuer, answered from the cache when
// the exact token verified before and is valid at now. raw may alias a reused buffer.
func (v *Verifier) Verify(raw string, now time.Time) (Principal, error) {
	v.mu.RLock()
	p, ok := v.m[raw]
	v.mu.RUnlock()
	if ok && now.Before(p.Expires) && !now.Before(p.NotBefore) {
		return p, nil
	}
	p, err := Verify(raw, v.secret, v.issuer, now)
	if err != nil {
		return Principal{}, err
	}
	p.UserID = strings.Clone(p.UserID)
	v.mu.Lock()
	if len(v.m) >= v.max {
		clear(v.m)
	}
	v.m[strings.Clone(raw)] = p
	v.mu.Unlock()
	return p, nil
}

// cached reports how many tokens the verifier remembers (for tests).
func (v *Verifier) cached() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.m)
}
