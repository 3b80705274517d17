package api

import (
	"strconv"
	"testing"
	"time"
)

// The cache never holds more than its bound, and keeps working past it.
func TestTokenCacheStaysBounded(t *testing.T) {
	c := newTokenCache(3)
	now := time.Now()
	for i := range 10 {
		c.put("tok"+strconv.Itoa(i), cachedToken{p: Principal{UserID: "u" + strconv.Itoa(i)}, expires: now.Add(time.Hour)})
		if len(c.m) > 3 {
			t.Fatalf("after %d puts the cache holds %d tokens", i+1, len(c.m))
		}
	}
	if p, ok := c.get("tok9", now); !ok || p.UserID != "u9" {
		t.Fatalf("the latest token: %+v %v", p, ok)
	}
	if _, ok := c.get("tok9", now.Add(2*time.Hour)); ok {
		t.Fatal("an expired token was served")
	}
	c.put("early", cachedToken{p: Principal{UserID: "e"}, notBefore: now.Add(time.Minute), expires: now.Add(time.Hour)})
	if _, ok := c.get("early", now); ok {
		t.Fatal("a token was served before its nbf")
	}
}
