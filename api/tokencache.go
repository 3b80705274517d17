package api

import (
	"sync"
	"time"
)

// tokenCache remembers tokens that verified, so that a buyer's next request costs a map
// lookup instead of a JSON decode and an HMAC. It is keyed by the whole token, signature
// included, so only the exact string that verified can hit; each hit re-checks the
// token's time window. It holds at most max entries and starts over when full: a flash
// sale's buyers each send many requests, so the hit rate stays high while the memory
// stays bounded.
type tokenCache struct {
	mu  sync.RWMutex
	m   map[string]cachedToken
	max int
}

type cachedToken struct {
	p         Principal
	notBefore time.Time // zero when the token has no nbf
	expires   time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{m: make(map[string]cachedToken), max: max}
}

// get returns the principal of a cached token that is valid at now.
func (t *tokenCache) get(raw string, now time.Time) (Principal, bool) {
	t.mu.RLock()
	e, ok := t.m[raw]
	t.mu.RUnlock()
	if !ok || !now.Before(e.expires) || now.Before(e.notBefore) {
		return Principal{}, false
	}
	return e.p, true
}

// put remembers a verified token. raw must not alias a reused buffer.
func (t *tokenCache) put(raw string, e cachedToken) {
	t.mu.Lock()
	if len(t.m) >= t.max {
		clear(t.m)
	}
	t.m[raw] = e
	t.mu.Unlock()
}
