package auth

import (
	"strconv"
	"testing"
	"time"
)

// The cache never holds more than its bound, keeps working past it, and never serves a
// token outside its time window.
func TestVerifierCacheStaysBoundedAndHonoursTime(t *testing.T) {
	secret := []byte("test-secret-test-secret-test-secret!")
	v := NewVerifier(secret, "flashstock", 3)
	now := time.Now()
	var last string
	for i := range 10 {
		tok, err := Issue(secret, "flashstock", "u"+strconv.Itoa(i), RoleCustomer, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(tok, now); err != nil {
			t.Fatal(err)
		}
		if n := v.cached(); n > 3 {
			t.Fatalf("after %d tokens the cache holds %d", i+1, n)
		}
		last = tok
	}
	if p, err := v.Verify(last, now); err != nil || p.UserID != "u9" {
		t.Fatalf("the latest token: %+v %v", p, err)
	}
	if _, err := v.Verify(last, now.Add(2*time.Hour)); err == nil {
		t.Fatal("an expired token was served from the cache")
	}
	// A cached token is checked against its window again: a copy of one whose nbf is
	// in the future must not pass because an equal string verified later.
	v.m["early"] = Principal{UserID: "e", Role: RoleCustomer, NotBefore: now.Add(time.Minute), Expires: now.Add(time.Hour)}
	if _, err := v.Verify("early", now); err == nil {
		t.Fatal("a token was served before its nbf")
	}
}
