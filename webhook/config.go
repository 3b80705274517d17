package webhook

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Config is what a Service needs. Zero fields take the defaults below.
type Config struct {
	// Keys encrypts signing secrets at rest (WEBHOOK_SECRET_KEY and
	// WEBHOOK_SECRET_KEYS_PREVIOUS). Required.
	Keys *Keyring
	// Guard refuses internal targets (WEBHOOK_ALLOW_PRIVATE sets Guard.AllowPrivate).
	Guard Guard
	// RetrySchedule is the wait before each retry (WEBHOOK_RETRY_SCHEDULE, default
	// 5s,1m,10m,1h,6h,24h); a delivery is failed after 1+len(RetrySchedule) attempts.
	RetrySchedule []time.Duration
	// Jitter adds up to this fraction of each wait, at random (default 0.1; negative: none).
	Jitter float64
	// Timeout bounds one delivery attempt (default 10 s).
	Timeout time.Duration
	// Now is the clock of every timestamp, schedule, lease and breaker (default time.Now).
	Now func() time.Time
	// Rand returns a float in [0,1) for the jitter (default math/rand/v2.Float64).
	Rand func() float64
}

// DefaultRetrySchedule is the retry schedule of the contract.
var DefaultRetrySchedule = []time.Duration{5 * time.Second, time.Minute, 10 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour}

func (c Config) withDefaults() Config {
	if c.RetrySchedule == nil {
		c.RetrySchedule = DefaultRetrySchedule
	}
	if c.Jitter == 0 {
		c.Jitter = 0.1
	}
	if c.Jitter < 0 {
		c.Jitter = 0
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	return c
}

// ConfigFromEnv reads the environment:
//
//	WEBHOOK_SECRET_KEY            32 bytes, base64 or hex (`openssl rand -base64 32`); required
//	WEBHOOK_SECRET_KEYS_PREVIOUS  older keys, comma-separated, still accepted for decryption
//	WEBHOOK_ALLOW_PRIVATE         true: allow loopback and private targets (default false)
//	WEBHOOK_RETRY_SCHEDULE        comma-separated Go durations (default 5s,1m,10m,1h,6h,24h)
//
// The clock and the resolver stay at their defaults.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var c Config
	cur := getenv("WEBHOOK_SECRET_KEY")
	if cur == "" {
		return c, errors.New("WEBHOOK_SECRET_KEY is required (32 bytes, base64 or hex: openssl rand -base64 32)")
	}
	var keys [][]byte
	for i, s := range append([]string{cur}, splitList(getenv("WEBHOOK_SECRET_KEYS_PREVIOUS"))...) {
		k, err := ParseKey(s)
		if err != nil {
			if i == 0 {
				return c, fmt.Errorf("WEBHOOK_SECRET_KEY: %w", err)
			}
			return c, fmt.Errorf("WEBHOOK_SECRET_KEYS_PREVIOUS item %d: %w", i, err)
		}
		keys = append(keys, k)
	}
	var err error
	if c.Keys, err = NewKeyring(keys...); err != nil {
		return c, err
	}
	if v := getenv("WEBHOOK_ALLOW_PRIVATE"); v != "" {
		if c.Guard.AllowPrivate, err = strconv.ParseBool(v); err != nil {
			return c, fmt.Errorf("WEBHOOK_ALLOW_PRIVATE: %w", err)
		}
	}
	if v := getenv("WEBHOOK_RETRY_SCHEDULE"); v != "" {
		if c.RetrySchedule, err = ParseSchedule(v); err != nil {
			return c, fmt.Errorf("WEBHOOK_RETRY_SCHEDULE: %w", err)
		}
	}
	return c, nil
}

// ParseSchedule reads a comma-separated list of positive durations ("5s,1m,10m").
func ParseSchedule(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, p := range splitList(s) {
		d, err := time.ParseDuration(p)
		if err != nil {
			return nil, err
		}
		if d <= 0 {
			return nil, fmt.Errorf("%s: not positive", p)
		}
		out = append(out, d)
	}
	if out == nil {
		out = []time.Duration{} // an empty schedule: no retries
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
