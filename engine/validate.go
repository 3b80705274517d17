package engine

import (
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Input bounds. They keep every script call small and every key name sane.
const (
	MaxLines       = 100  // lines per checkout or hold
	MaxQuantity    = 1000 // units per line
	MaxIDLength    = 128  // user, order, hold ids and idempotency keys
	MaxSKULength   = 64
	MaxReasonBytes = 256
	// MaxUnits bounds stock, deltas, levels and per-user limits: far above any real
	// stock, and far below where a Lua number (a double) or a formatted movement stops
	// being exact.
	MaxUnits = 1_000_000_000
	// MaxPrice bounds a unit price in minor units; with MaxQuantity and MaxLines, no
	// order total can overflow an int64.
	MaxPrice = 1_000_000_000_000
)

// NewID returns a new time-ordered id for an order or hold (a UUIDv7).
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// uuid.NewV7 fails only if the system's randomness does; fall back to a v4
		// drawn from crypto/rand, which panics in that case as it should.
		return uuid.Must(uuid.NewRandomFromReader(rand.Reader)).String()
	}
	return id.String()
}

// NewShortID returns 12 random hex characters: for names that need to differ between
// processes or runs (a consumer name, a request-id prefix), not for records.
func NewShortID() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// recordNamespace scopes the UUIDs derived from idempotency keys.
var recordNamespace = uuid.MustParse("6f0a1c52-3d0e-4b7e-9a51-0c2d8f3e7b11")

// recordID derives the id of the order or hold that (user, idempotency key) names.
// Keys are scoped per user and per kind of record.
func recordID(kind, user, key string) string {
	// uuid.NewSHA1(recordNamespace, kind \0 user \0 key), hashed from a stack buffer:
	// this runs on every checkout with a key.
	var buf [16 + 2*MaxIDLength + 16]byte
	b := append(buf[:0], recordNamespace[:]...)
	b = append(append(append(append(append(b, kind...), 0), user...), 0), key...)
	sum := sha1.Sum(b)
	var u uuid.UUID
	copy(u[:], sum[:16])
	u[6] = (u[6] & 0x0f) | 0x50 // version 5
	u[8] = (u[8] & 0x3f) | 0x80 // RFC 4122 variant
	return u.String()
}

// ValidSKU reports whether s is 1–64 characters of [A-Za-z0-9._-].
func ValidSKU(s string) bool { return validToken(s, MaxSKULength) }

// validToken reports whether s is 1–max characters of [A-Za-z0-9._-]: the alphabet of
// SKUs and record ids, which keeps them safe inside key names and outbox fields.
func validToken(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func checkSKU(field, sku string) error {
	if !ValidSKU(sku) {
		return invalid(field, "must be 1-%d characters of [A-Za-z0-9._-]", MaxSKULength)
	}
	return nil
}

// ValidKey reports whether s is 1–128 printable ASCII characters: the rule for user ids
// and idempotency keys.
func ValidKey(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ValidID reports whether s can be a record id (order, hold): 1–128 characters of
// [A-Za-z0-9._-].
func ValidID(s string) bool { return validToken(s, MaxIDLength) }

// checkID admits record ids: 1–128 characters of [A-Za-z0-9._-].
func checkID(field, id string) error {
	if !validToken(id, MaxIDLength) {
		return invalid(field, "must be 1-%d characters of [A-Za-z0-9._-]", MaxIDLength)
	}
	return nil
}

func checkKey(field, s string, optional bool) error {
	if optional && s == "" {
		return nil
	}
	if !ValidKey(s) {
		return invalid(field, "must be 1-%d printable ASCII characters", MaxIDLength)
	}
	return nil
}

// normalize validates lines and returns them summed per SKU and sorted by SKU, so that
// equal requests look equal and every script sees its keys in one order.
func normalize(lines []Line) ([]Line, error) {
	if len(lines) == 0 {
		return nil, invalid("items", "at least one line is required")
	}
	if len(lines) > MaxLines {
		return nil, invalid("items", "at most %d lines are allowed", MaxLines)
	}
	out := make([]Line, 0, len(lines))
	for i, l := range lines {
		if err := checkSKU("items["+strconv.Itoa(i)+"].sku", l.SKU); err != nil {
			return nil, err
		}
		if l.Quantity < 1 || l.Quantity > MaxQuantity {
			return nil, invalid("items["+strconv.Itoa(i)+"].quantity", "must be between 1 and %d", MaxQuantity)
		}
		out = append(out, l)
	}
	if len(out) == 1 {
		return out, nil
	}
	slices.SortFunc(out, func(a, b Line) int { return strings.Compare(a.SKU, b.SKU) })
	merged := out[:1]
	for _, l := range out[1:] {
		if last := &merged[len(merged)-1]; last.SKU == l.SKU {
			last.Quantity += l.Quantity
		} else {
			merged = append(merged, l)
		}
	}
	return merged, nil
}

// fingerprint identifies a request for idempotency: the operation and its normalized
// content. Only its equality matters.
func fingerprint(op string, parts ...string) string {
	b := []byte(op)
	for _, p := range parts {
		b = append(append(b, 0), p...)
	}
	return sumHex(b)
}

func sumHex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// linesFingerprint is fingerprint(op, sku1, qty1, …, extra…), built in a stack buffer
// for the usual small request.
func linesFingerprint(op string, lines []Line, extra ...string) string {
	var buf [256]byte
	b := append(buf[:0], op...)
	for _, l := range lines {
		b = strconv.AppendInt(append(append(append(b, 0), l.SKU...), 0), l.Quantity, 10)
	}
	for _, e := range extra {
		b = append(append(b, 0), e...)
	}
	return sumHex(b)
}
