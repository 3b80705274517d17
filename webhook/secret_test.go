package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/flashstock/flashstock/webhook"
)

// The test vector of the Standard Webhooks reference libraries.
func TestSignMatchesTheSpecVector(t *testing.T) {
	got, err := webhook.Sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
		time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestSignAgreesWithTheReferenceLibraryAndAPlainHMAC(t *testing.T) {
	for range 20 {
		secret := webhook.NewSecret()
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if !strings.HasPrefix(secret, "whsec_") || err != nil || len(raw) < 24 {
			t.Fatalf("secret %q: want whsec_ and base64 of 24+ bytes (%v)", secret, err)
		}
		id := webhook.EventID(webhook.SoldOut, "TV", "1")
		at := time.Now()
		body := []byte(`{"type":"inventory.sold_out","timestamp":"2026-03-01T12:00:00Z","data":{"sku":"TV"}}`)
		sig, err := webhook.Sign(secret, id, at, body)
		if err != nil {
			t.Fatal(err)
		}
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
		h.Set("webhook-signature", sig)
		if err := wh.Verify(body, h); err != nil {
			t.Fatalf("reference library refuses our signature: %v", err)
		}
		ref, _ := wh.Sign(id, at, body)
		mac := hmac.New(sha256.New, raw)
		mac.Write([]byte(id + "." + strconv.FormatInt(at.Unix(), 10) + "." + string(body)))
		plain := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		if sig != ref || sig != plain {
			t.Fatalf("signature: got %s, reference library %s, plain HMAC %s", sig, ref, plain)
		}
		h.Set("webhook-signature", sig[:len(sig)-4]+"AAA=")
		if wh.Verify(body, h) == nil {
			t.Fatal("a tampered signature verified: the check is not checking")
		}
	}
}

func TestKeyringSealsBoundToTheSubscriptionAndRotates(t *testing.T) {
	oldKey, newKey := make([]byte, 32), make([]byte, 32)
	newKey[0] = 1
	old, err := webhook.NewKeyring(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	secret := webhook.NewSecret()
	sealed := old.Seal("wh_a", secret)
	if strings.Contains(sealed, strings.TrimPrefix(secret, "whsec_")) {
		t.Fatalf("sealed %q contains the secret", sealed)
	}
	if got, err := old.Open("wh_a", sealed); err != nil || got != secret {
		t.Fatalf("open: got %q, %v; want the secret", got, err)
	}
	if _, err := old.Open("wh_b", sealed); err == nil {
		t.Fatal("a secret sealed for wh_a opened for wh_b")
	}
	rotated, err := webhook.NewKeyring(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rotated.Open("wh_a", sealed); err != nil || got != secret {
		t.Fatalf("open with the old key as previous: got %q, %v", got, err)
	}
	onlyNew, _ := webhook.NewKeyring(newKey)
	if _, err := onlyNew.Open("wh_a", sealed); err == nil {
		t.Fatal("opened without the key that sealed it")
	}
	if got, err := onlyNew.Open("wh_a", rotated.Seal("wh_a", secret)); err != nil || got != secret {
		t.Fatalf("a rotated keyring seals under the new key: got %q, %v", got, err)
	}
}

func TestConfigFromEnv(t *testing.T) {
	key := make([]byte, 32)
	key[5] = 9
	env := map[string]string{
		"WEBHOOK_SECRET_KEY":           base64.StdEncoding.EncodeToString(key),
		"WEBHOOK_SECRET_KEYS_PREVIOUS": hex.EncodeToString(make([]byte, 32)),
		"WEBHOOK_ALLOW_PRIVATE":        "true",
		"WEBHOOK_RETRY_SCHEDULE":       "1s, 2m",
	}
	c, err := webhook.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !c.Guard.AllowPrivate || len(c.RetrySchedule) != 2 || c.RetrySchedule[1] != 2*time.Minute || c.Keys == nil {
		t.Fatalf("got %+v", c)
	}
	for name, bad := range map[string]map[string]string{
		"no key":         {},
		"short key":      {"WEBHOOK_SECRET_KEY": base64.StdEncoding.EncodeToString(key[:16])},
		"bad schedule":   {"WEBHOOK_SECRET_KEY": env["WEBHOOK_SECRET_KEY"], "WEBHOOK_RETRY_SCHEDULE": "5s,-1m"},
		"bad allow":      {"WEBHOOK_SECRET_KEY": env["WEBHOOK_SECRET_KEY"], "WEBHOOK_ALLOW_PRIVATE": "maybe"},
		"bad previous":   {"WEBHOOK_SECRET_KEY": env["WEBHOOK_SECRET_KEY"], "WEBHOOK_SECRET_KEYS_PREVIOUS": "zz"},
		"not base64 key": {"WEBHOOK_SECRET_KEY": "not a key!"},
	} {
		if _, err := webhook.ConfigFromEnv(func(k string) string { return bad[k] }); err == nil {
			t.Errorf("%s: got no error", name)
		}
	}
}
