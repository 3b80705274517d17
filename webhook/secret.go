package webhook

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// secretPrefix starts every signing secret (Standard Webhooks).
const secretPrefix = "whsec_"

// secretBytes is how many random bytes a signing secret has.
const secretBytes = 32

// NewSecret returns a fresh signing secret: "whsec_" and the standard base64 of 32
// random bytes.
func NewSecret() string {
	b := make([]byte, secretBytes)
	_, _ = rand.Read(b) // never fails (crypto/rand panics if the system's randomness does)
	return secretPrefix + base64.StdEncoding.EncodeToString(b)
}

// Sign returns the webhook-signature header value for one request: "v1," and the
// standard base64 of HMAC-SHA256 over "{id}.{unix seconds}.{body}", keyed with the
// base64-decoded part of secret after "whsec_".
func Sign(secret, id string, at time.Time, body []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, secretPrefix))
	if err != nil {
		return "", fmt.Errorf("sign: secret is not base64: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(at.Unix(), 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

// Keyring encrypts signing secrets at rest with AES-256-GCM, so a copy of the database
// alone cannot sign. The first key encrypts; every key decrypts, which is what a
// rotation needs:
//
//  1. generate a key: `openssl rand -base64 32`
//  2. deploy with WEBHOOK_SECRET_KEY=<new> and WEBHOOK_SECRET_KEYS_PREVIOUS=<old>
//     (comma-separated, newest first)
//  3. call Service.Rewrap once (every subscription is re-encrypted under the new key)
//  4. drop the old key from WEBHOOK_SECRET_KEYS_PREVIOUS
//
// A sealed secret reads "v1:<key id>:<base64 of nonce and ciphertext>"; the key id is
// the first 8 hex digits of the key's SHA-256, and the subscription id is the
// additional data, so a sealed secret cannot be moved to another subscription.
type Keyring struct {
	ids  []string
	aead []cipher.AEAD
}

// NewKeyring returns a keyring over 32-byte keys, current first.
func NewKeyring(keys ...[]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("keyring: no key")
	}
	k := &Keyring{}
	for i, key := range keys {
		if len(key) != 32 {
			return nil, fmt.Errorf("keyring: key %d has %d bytes, want 32", i, len(key))
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		sum := sha256.Sum256(key)
		k.ids = append(k.ids, hex.EncodeToString(sum[:4]))
		k.aead = append(k.aead, aead)
	}
	return k, nil
}

// ParseKey reads a 32-byte key written as standard or URL-safe base64 (padded or not)
// or as 64 hex digits.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 64 {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("key has %d bytes, want 32", len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("key is neither base64 nor hex")
}

// Seal encrypts secret under the current key, bound to the subscription id.
func (k *Keyring) Seal(subscriptionID, secret string) string {
	nonce := make([]byte, k.aead[0].NonceSize())
	_, _ = rand.Read(nonce)
	ct := k.aead[0].Seal(nonce, nonce, []byte(secret), []byte(subscriptionID))
	return "v1:" + k.ids[0] + ":" + base64.StdEncoding.EncodeToString(ct)
}

// Open decrypts a sealed secret with whichever key sealed it.
func (k *Keyring) Open(subscriptionID, sealed string) (string, error) {
	parts := strings.Split(sealed, ":")
	if len(parts) != 3 || parts[0] != "v1" {
		return "", errors.New("open secret: not a sealed secret")
	}
	for i, id := range k.ids {
		if id != parts[1] {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(parts[2])
		n := k.aead[i].NonceSize()
		if err != nil || len(raw) < n {
			return "", errors.New("open secret: malformed")
		}
		pt, err := k.aead[i].Open(nil, raw[:n], raw[n:], []byte(subscriptionID))
		if err != nil {
			return "", fmt.Errorf("open secret: %w", err)
		}
		return string(pt), nil
	}
	return "", fmt.Errorf("open secret: sealed under key %s, which is not configured", parts[1])
}

// current reports whether sealed was sealed under the current key.
func (k *Keyring) current(sealed string) bool {
	return strings.HasPrefix(sealed, "v1:"+k.ids[0]+":")
}
