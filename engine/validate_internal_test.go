package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// Ids and fingerprints are stored in Redis and MongoDB: the hashing shortcuts must give
// exactly what the plain definitions give, or retries across an upgrade would change.
func TestIDsAndFingerprintsMatchTheirDefinitions(t *testing.T) {
	long := strings.Repeat("k", MaxIDLength)
	for _, c := range [][3]string{{"order", "u1", "key-1"}, {"hold", "", ""}, {"order", long, long}} {
		want := uuid.NewSHA1(recordNamespace, []byte(c[0]+"\x00"+c[1]+"\x00"+c[2])).String()
		if got := recordID(c[0], c[1], c[2]); got != want {
			t.Errorf("recordID%q = %s, want %s", c, got, want)
		}
	}
	plain := func(op string, parts ...string) string {
		h := sha256.New()
		h.Write([]byte(op))
		for _, p := range parts {
			h.Write([]byte{0})
			h.Write([]byte(p))
		}
		return hex.EncodeToString(h.Sum(nil)[:16])
	}
	lines := []Line{{SKU: "A", Quantity: 3}, {SKU: strings.Repeat("S", MaxSKULength), Quantity: 1000}}
	for range 3 {
		lines = append(lines, lines...) // past the stack buffer too
	}
	var parts []string
	for _, l := range lines {
		parts = append(parts, l.SKU, strconv.FormatInt(l.Quantity, 10))
	}
	if got, want := linesFingerprint("reserve", lines, "600000"), plain("reserve", append(parts, "600000")...); got != want {
		t.Errorf("linesFingerprint = %s, want %s", got, want)
	}
	if got, want := fingerprint("adjust", "A", "-5", "damaged"), plain("adjust", "A", "-5", "damaged"); got != want {
		t.Errorf("fingerprint = %s, want %s", got, want)
	}
}
