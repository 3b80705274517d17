package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

// inTempDir runs the test in an empty directory, so no stray .env is read.
func inTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	return dir
}

func TestConfigDefaultsAreTheEmbeddedMode(t *testing.T) {
	inTempDir(t)
	c, err := loadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.LoginLimitPerMinute != 10 || c.LoginAddressLimitPerMinute != 30 || c.TrustedProxies != nil || c.Host != "127.0.0.1" {
		t.Fatalf("login limits and listening defaults: %+v", c)
	}
	c, err = loadConfig(env(map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7,2001:db8::/32"}))
	if err != nil || fmt.Sprint(c.TrustedProxies) != "[10.0.0.0/8 192.0.2.7/32 2001:db8::/32]" {
		t.Fatalf("TRUSTED_PROXIES: got %v, %v", c.TrustedProxies, err)
	}
	if !c.Embedded() || !c.SeedDemo || c.Port != 3000 || c.RateLimitPerMinute != 120 || c.JWTIssuer != "flashstock" ||
		c.MongoDatabase != "flashstock" || c.DataDir != "./data" || c.SoldOutFor != 0 || c.Role != "all" ||
		c.QueuePassTTL != 120*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
	if c, err := loadConfig(env(map[string]string{"QUEUE_PASS_TTL_SECONDS": "30"})); err != nil || c.QueuePassTTL != 30*time.Second {
		t.Fatalf("QUEUE_PASS_TTL_SECONDS=30: got %v, %v", c.QueuePassTTL, err)
	}
}

// The embedded mode's demo admin has a published password, so it listens on loopback
// unless told otherwise; outside it, seeding needs a password of the operator's own.
func TestConfigDemoAdminAndListenAddress(t *testing.T) {
	inTempDir(t)
	secret := strings.Repeat("s", 32)
	external := map[string]string{"REDIS_URL": "redis://r:6379", "MONGODB_URI": "mongodb://m", "JWT_SECRET": secret}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range external {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name        string
		env         map[string]string
		listen      string
		seed        bool
		adminPasswd string
	}{
		{"embedded", nil, "127.0.0.1:3000", true, "admin12345"},
		{"embedded with HOST", map[string]string{"HOST": "0.0.0.0"}, "0.0.0.0:3000", true, "admin12345"},
		{"embedded with its own admin password", map[string]string{"DEMO_ADMIN_PASSWORD": "a-long-password"}, "127.0.0.1:3000", true, "a-long-password"},
		{"external", with(), ":3000", false, ""},
		{"external with HOST", with("HOST", "10.0.0.7", "PORT", "8080"), "10.0.0.7:8080", false, ""},
		{"external seeding", with("SEED_DEMO", "true", "DEMO_ADMIN_PASSWORD", "twelve-chars"), ":3000", true, "twelve-chars"},
		{"IPv6 host", map[string]string{"HOST": "::1"}, "[::1]:3000", true, "admin12345"},
	}
	for _, tc := range cases {
		c, err := loadConfig(env(tc.env))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := listenAddr(c); got != tc.listen {
			t.Errorf("%s: listen on %q, want %q", tc.name, got, tc.listen)
		}
		if c.SeedDemo != tc.seed || c.DemoAdminPassword != tc.adminPasswd {
			t.Errorf("%s: seed %v with admin password %q, want %v with %q", tc.name, c.SeedDemo, c.DemoAdminPassword, tc.seed, tc.adminPasswd)
		}
	}
	// seed, the command, never falls back to the published password either.
	var ue usageError
	if err := run(t.Context(), []string{"seed"}, env(with()), os.Stdout); !errors.As(err, &ue) || !strings.Contains(err.Error(), "DEMO_ADMIN_PASSWORD") {
		t.Fatalf("seed without DEMO_ADMIN_PASSWORD: got %v", err)
	}
}

// Profiles stay on loopback unless remote access is asked for by name.
func TestConfigPprofAddress(t *testing.T) {
	inTempDir(t)
	for _, addr := range []string{"127.0.0.1:6060", "localhost:6060", "[::1]:6060", "127.0.0.2:0"} {
		if c, err := loadConfig(env(map[string]string{"PPROF_ADDR": addr})); err != nil || c.PprofAddr != addr {
			t.Errorf("PPROF_ADDR=%s: got %q, %v", addr, c.PprofAddr, err)
		}
	}
	c, err := loadConfig(env(map[string]string{"PPROF_ADDR": "0.0.0.0:6060", "PPROF_ALLOW_REMOTE": "true"}))
	if err != nil || !c.PprofAllowRemote || c.PprofAddr != "0.0.0.0:6060" {
		t.Fatalf("forced remote pprof: got %+v, %v", c, err)
	}
}

func TestConfigRefusesBadValues(t *testing.T) {
	inTempDir(t)
	secret := strings.Repeat("s", 32)
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"port not a number", map[string]string{"PORT": "http"}, "PORT"},
		{"port too big", map[string]string{"PORT": "70000"}, "PORT"},
		{"external redis without a secret", map[string]string{"REDIS_URL": "redis://localhost:6379"}, "JWT_SECRET is required"},
		{"external mongo without a secret", map[string]string{"MONGODB_URI": "mongodb://localhost"}, "JWT_SECRET is required"},
		{"short secret", map[string]string{"JWT_SECRET": "short"}, "at least 32"},
		{"redis url scheme", map[string]string{"REDIS_URL": "localhost:6379", "JWT_SECRET": secret}, "REDIS_URL"},
		{"mongo uri scheme", map[string]string{"MONGODB_URI": "localhost", "JWT_SECRET": secret}, "MONGODB_URI"},
		{"seed flag", map[string]string{"SEED_DEMO": "maybe"}, "SEED_DEMO"},
		{"negative rate limit", map[string]string{"RATE_LIMIT_PER_MINUTE": "-1"}, "RATE_LIMIT_PER_MINUTE"},
		{"sold-out cache", map[string]string{"SOLDOUT_CACHE_MS": "soon"}, "SOLDOUT_CACHE_MS"},
		{"queue pass lifetime", map[string]string{"QUEUE_PASS_TTL_SECONDS": "0"}, "QUEUE_PASS_TTL_SECONDS"},
		{"role", map[string]string{"ROLE": "boss"}, "ROLE"},
		{"split role when embedded", map[string]string{"ROLE": "api"}, "needs REDIS_URL"},
		{"log level", map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"schedule", map[string]string{"SNAPSHOT_SCHEDULE": "every minute"}, "SNAPSHOT_SCHEDULE"},
		{"external seed without an admin password", map[string]string{"REDIS_URL": "redis://r:6379", "MONGODB_URI": "mongodb://m",
			"JWT_SECRET": secret, "SEED_DEMO": "true"}, "needs DEMO_ADMIN_PASSWORD"},
		{"short admin password", map[string]string{"REDIS_URL": "redis://r:6379", "MONGODB_URI": "mongodb://m",
			"JWT_SECRET": secret, "SEED_DEMO": "true", "DEMO_ADMIN_PASSWORD": "elevenchars"}, "DEMO_ADMIN_PASSWORD must be 12"},
		{"host with a port", map[string]string{"HOST": "0.0.0.0:3000"}, "HOST"},
		{"pprof on every interface", map[string]string{"PPROF_ADDR": ":6060"}, "loopback"},
		{"pprof on a public address", map[string]string{"PPROF_ADDR": "0.0.0.0:6060"}, "PPROF_ALLOW_REMOTE"},
		{"pprof on a host name", map[string]string{"PPROF_ADDR": "example.com:6060"}, "loopback"},
		{"pprof without a port", map[string]string{"PPROF_ADDR": "127.0.0.1"}, "host:port"},
		{"pprof flag", map[string]string{"PPROF_ADDR": "0.0.0.0:6060", "PPROF_ALLOW_REMOTE": "sure"}, "PPROF_ALLOW_REMOTE"},
		{"login limit", map[string]string{"LOGIN_LIMIT_PER_MINUTE": "-1"}, "LOGIN_LIMIT_PER_MINUTE"},
		{"login address limit", map[string]string{"LOGIN_ADDRESS_LIMIT_PER_MINUTE": "lots"}, "LOGIN_ADDRESS_LIMIT_PER_MINUTE"},
		{"trusted proxies", map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8, lb.internal"}, "TRUSTED_PROXIES"},
		{"cluster seed without a port", map[string]string{"REDIS_CLUSTER_ADDRS": "r1:7000,r2"}, "REDIS_CLUSTER_ADDRS"},
		{"cluster and one Redis", map[string]string{"REDIS_CLUSTER_ADDRS": "r1:7000", "REDIS_URL": "redis://r:6379",
			"MONGODB_URI": "mongodb://m", "JWT_SECRET": secret}, "REDIS_CLUSTER_ADDRS and REDIS_URL"},
		{"cluster password without a cluster", map[string]string{"REDIS_CLUSTER_PASSWORD": "pw"}, "need REDIS_CLUSTER_ADDRS"},
		{"cluster user without a password", map[string]string{"REDIS_CLUSTER_ADDRS": "r1:7000", "REDIS_CLUSTER_USERNAME": "u"},
			"REDIS_CLUSTER_USERNAME needs REDIS_CLUSTER_PASSWORD"},
		{"cluster TLS without a cluster", map[string]string{"REDIS_CLUSTER_TLS": "true"}, "need REDIS_CLUSTER_ADDRS"},
		{"cluster CA without TLS", map[string]string{"REDIS_CLUSTER_ADDRS": "r1:7000", "REDIS_CLUSTER_CA_FILE": "ca.pem"},
			"REDIS_CLUSTER_CA_FILE needs REDIS_CLUSTER_TLS=true"},
		{"cluster CA that is not there", map[string]string{"REDIS_CLUSTER_ADDRS": "r1:7000", "REDIS_CLUSTER_TLS": "true",
			"REDIS_CLUSTER_CA_FILE": "/nonexistent/ca.pem"}, "REDIS_CLUSTER_CA_FILE"},
		{"cluster TLS flag", map[string]string{"REDIS_CLUSTER_ADDRS": "r1:7000", "REDIS_CLUSTER_TLS": "sure"}, "REDIS_CLUSTER_TLS"},
		{"no partitions", map[string]string{"PARTITIONS": "0"}, "PARTITIONS"},
		{"too many partitions", map[string]string{"REDIS_CLUSTER_ADDRS": "r1:7000", "PARTITIONS": "100000"}, "PARTITIONS"},
		{"partitions on the embedded Redis", map[string]string{"PARTITIONS": "4"}, "PARTITIONS=4 needs"},
		{"a durability nothing would provide", map[string]string{"REDIS_WAIT_REPLICAS": "1"}, "REDIS_WAIT_REPLICAS=1 needs"},
		{"wait replicas", map[string]string{"REDIS_URL": "redis://r:6379", "REDIS_WAIT_REPLICAS": "-1"}, "REDIS_WAIT_REPLICAS"},
		{"wait timeout", map[string]string{"REDIS_URL": "redis://r:6379", "REDIS_WAIT_TIMEOUT_MS": "5000"}, "REDIS_WAIT_TIMEOUT_MS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(env(tc.env))
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want a usage error mentioning %q", err, tc.want)
			}
		})
	}
}

// Refusals never print secrets: a URL's password, or the content of a malformed .env.
func TestConfigErrorsShowNoSecrets(t *testing.T) {
	dir := inTempDir(t)
	_, err := loadConfig(env(map[string]string{"REDIS_URL": "tcp://user:hunter2hunter2@r:6379", "JWT_SECRET": strings.Repeat("s", 32)}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("bad REDIS_URL: got %v, want a refusal without its password", err)
	}
	dotenv := "PORT=4000\nMY-VAR=1\nJWT_SECRET=topsecret-topsecret-topsecret-topsecret\n"
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(dotenv), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = loadConfig(env(nil))
	if err == nil || strings.Contains(err.Error(), "topsecret") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("malformed .env: got %v, want line 2 named and nothing of the file shown", err)
	}
}

func TestConfigReadsDotenvBelowTheEnvironment(t *testing.T) {
	dir := inTempDir(t)
	dotenv := "# comment\nPORT=4000\nexport JWT_ISSUER=\"from-file\"\nRATE_LIMIT_PER_MINUTE=10\n"
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(dotenv), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(env(map[string]string{"RATE_LIMIT_PER_MINUTE": "99"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 4000 || c.JWTIssuer != "from-file" || c.RateLimitPerMinute != 99 {
		t.Fatalf("got port %d issuer %q limit %d", c.Port, c.JWTIssuer, c.RateLimitPerMinute)
	}
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("NOT A PAIR\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var ue usageError
	if _, err := loadConfig(env(nil)); !errors.As(err, &ue) {
		t.Fatalf("malformed .env: got %v", err)
	}
}

func TestRunRefusesUnknownCommandsAndBadConfig(t *testing.T) {
	inTempDir(t)
	var ue usageError
	if err := run(t.Context(), []string{"dance"}, env(nil), os.Stdout); !errors.As(err, &ue) {
		t.Fatalf("unknown command: got %v", err)
	}
	if err := run(t.Context(), []string{"serve"}, env(map[string]string{"PORT": "x"}), os.Stdout); !errors.As(err, &ue) {
		t.Fatalf("bad config: got %v", err)
	}
	if err := run(t.Context(), []string{"reconcile"}, env(nil), os.Stdout); !errors.As(err, &ue) {
		t.Fatalf("reconcile in embedded mode: got %v", err)
	}
}

func TestRedactHidesCredentials(t *testing.T) {
	for in, want := range map[string]string{
		"redis://:pw@host:6379/0":          "redis://:xxxxx@host:6379/0",
		"mongodb://user:secret@db:27017/x": "mongodb://user:xxxxx@db:27017/x",
		"redis://host:6379":                "redis://host:6379",
		"":                                 "(embedded)",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// The shipped .env.example, copied to .env as its header says, must load as written:
// inline comments included.
func TestConfigLoadsTheShippedEnvExample(t *testing.T) {
	example, err := os.ReadFile(filepath.Join("..", "..", ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	dir := inTempDir(t)
	if err := os.WriteFile(filepath.Join(dir, ".env"), example, 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := readDotenv(".env")
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"SOLDOUT_CACHE_MS": "0", "LOGIN_LIMIT_PER_MINUTE": "10", "LOGIN_ADDRESS_LIMIT_PER_MINUTE": "30"} {
		if got := raw[k]; got != want {
			t.Errorf("%s: got %q, want %q (an inline comment is not part of the value)", k, got, want)
		}
	}
	c, err := loadConfig(env(nil))
	if err != nil {
		t.Fatalf(".env.example as .env: %v", err)
	}
	if c.Port != 3000 || c.MongoDatabase != "flashstock" || c.DataDir != "./data" || c.JWTIssuer != "flashstock" ||
		c.RateLimitPerMinute != 120 || c.SoldOutFor != 0 || !c.Embedded() || c.LoginLimitPerMinute != 10 ||
		c.LoginAddressLimitPerMinute != 30 || c.Host != "127.0.0.1" || c.TrustedProxies != nil {
		t.Fatalf("got %+v", c)
	}
	// The environment still wins over the file.
	if c, err := loadConfig(env(map[string]string{"SOLDOUT_CACHE_MS": "50"})); err != nil || c.SoldOutFor != 50*time.Millisecond {
		t.Fatalf("environment over .env: got %v, %v", c.SoldOutFor, err)
	}
}

// Webhooks run with WEBHOOK_SECRET_KEY, or in the embedded mode with a key of its own
// kept under DATA_DIR across restarts; bad WEBHOOK_* settings stop start-up.
func TestConfigWebhooks(t *testing.T) {
	dir := inTempDir(t)
	secret := strings.Repeat("s", 32)
	external := map[string]string{"REDIS_URL": "redis://r:6379", "MONGODB_URI": "mongodb://m", "JWT_SECRET": secret}
	if c, err := loadConfig(env(external)); err != nil || c.Webhooks {
		t.Fatalf("external stores without a key: webhooks %v, %v; want off", c.Webhooks, err)
	}
	withKey := map[string]string{"WEBHOOK_SECRET_KEY": strings.Repeat("ab", 32)}
	for k, v := range external {
		withKey[k] = v
	}
	if c, err := loadConfig(env(withKey)); err != nil || !c.Webhooks {
		t.Fatalf("with a key: webhooks %v, %v; want on", c.Webhooks, err)
	}
	for name, bad := range map[string]map[string]string{
		"short key":      {"WEBHOOK_SECRET_KEY": "abc"},
		"bad schedule":   {"WEBHOOK_RETRY_SCHEDULE": "soon"},
		"private switch": {"WEBHOOK_ALLOW_PRIVATE": "perhaps"},
	} {
		t.Run(name, func(t *testing.T) {
			var ue usageError
			if _, err := loadConfig(env(bad)); !errors.As(err, &ue) {
				t.Fatalf("got %v, want a usage error", err)
			}
		})
	}
	c, err := loadConfig(env(nil))
	if err != nil || !c.Webhooks {
		t.Fatalf("embedded: webhooks %v, %v; want on", c.Webhooks, err)
	}
	first, err := embeddedWebhookKey(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := embeddedWebhookKey(filepath.Join(dir, "data"))
	if err != nil || again != first || len(first) != 64 {
		t.Fatalf("embedded key: %q then %q, %v; want one 32-byte key kept", first, again, err)
	}
	if _, err := c.webhookConfig(first); err != nil {
		t.Fatalf("the embedded key does not configure webhooks: %v", err)
	}
}
