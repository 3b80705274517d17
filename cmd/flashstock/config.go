package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/joho/godotenv"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/rediscluster"
	stocksync "github.com/flashstock/flashstock/sync"
	"github.com/flashstock/flashstock/webhook"
)

// Config is every setting, loaded once from the environment and a .env file (the
// environment wins). Defaults live here and nowhere else.
type Config struct {
	// Host is the interface the API listens on: 127.0.0.1 in the embedded mode (its demo
	// admin has a published password), all interfaces otherwise, unless HOST is set.
	Host     string
	Port     int
	RedisURL string
	// RedisClusterAddrs are the seeds of a Redis Cluster (REDIS_CLUSTER_ADDRS), set
	// instead of RedisURL.
	RedisClusterAddrs []string
	// RedisClusterUsername and RedisClusterPassword are the cluster's credentials
	// (REDIS_CLUSTER_USERNAME, an ACL user, optional; REDIS_CLUSTER_PASSWORD, its password
	// or the nodes' requirepass).
	RedisClusterUsername, RedisClusterPassword string
	// RedisClusterTLS makes every connection to the cluster TLS (REDIS_CLUSTER_TLS),
	// trusting the CA in the PEM file RedisClusterCAFile (REDIS_CLUSTER_CA_FILE; empty:
	// the system's roots).
	RedisClusterTLS    bool
	RedisClusterCAFile string
	// RedisCluster is how serve reaches the cluster: the settings above, the CA read.
	RedisCluster rediscluster.ClientOptions
	// Partitions is how many partitions (hash tags) SKUs are spread over (PARTITIONS;
	// default 1, 16 with a cluster).
	Partitions int
	// WaitReplicas and WaitTimeout: acknowledge a stock change only once this many
	// replicas confirmed it (REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT_MS).
	WaitReplicas  int
	WaitTimeout   time.Duration
	MongoURI      string
	MongoDatabase string
	DataDir       string
	JWTSecret     string
	JWTIssuer     string
	SeedDemo      bool
	// DemoAdminPassword is the demo admin's password: DEMO_ADMIN_PASSWORD, required to
	// seed outside the embedded mode; the embedded mode falls back to admin12345.
	DemoAdminPassword string
	// LoginLimitPerMinute is how many failed logins one email may have per minute;
	// LoginAddressLimitPerMinute how many login and register requests one client
	// address may make per minute. 0 disables either.
	LoginLimitPerMinute        int
	LoginAddressLimitPerMinute int
	// TrustedProxies are the proxies (IPs or CIDRs) whose X-Forwarded-For names the
	// client, for the per-address limit.
	TrustedProxies     []netip.Prefix
	RateLimitPerMinute int
	// SoldOutFor is how long a SKU seen sold out may be refused without asking Redis
	// (SOLDOUT_CACHE_MS; engine.Options.SoldOutFor). 0 keeps every answer live.
	SoldOutFor time.Duration
	// QueuePassTTL is how long a waiting room's pass stays valid (QUEUE_PASS_TTL_SECONDS,
	// default 120; engine.Options.QueuePassTTL).
	QueuePassTTL time.Duration
	// LowStockThreshold is the available level at or below which a SKU is reported as
	// low on stock (metric flashstock_stock_low).
	LowStockThreshold int
	// Role is what serve runs: all (API, syncer, scheduler), api or worker.
	Role     string
	LogLevel string
	// PprofAddr, if set, serves net/http/pprof on that address (keep it on loopback).
	PprofAddr string
	// PprofAllowRemote lets PprofAddr be a non-loopback address.
	PprofAllowRemote bool
	ShutdownTimeout  time.Duration
	Specs            stocksync.Specs
	// Webhooks says signed webhooks run: WEBHOOK_SECRET_KEY is set, or the embedded
	// mode keeps a key of its own under DATA_DIR. Without them the webhook routes
	// answer 503 and no worker runs. webhookEnv reads the WEBHOOK_* settings.
	Webhooks   bool
	webhookEnv func(string) string
}

// webhookConfig is the webhook service's configuration; key, if not empty, stands in
// for WEBHOOK_SECRET_KEY (the embedded mode's own key).
func (c Config) webhookConfig(key string) (webhook.Config, error) {
	return webhook.ConfigFromEnv(func(k string) string {
		if k == "WEBHOOK_SECRET_KEY" && key != "" {
			return key
		}
		return c.webhookEnv(k)
	})
}

// Embedded reports whether Redis and MongoDB run inside this process.
func (c Config) Embedded() bool { return c.embeddedRedis() && c.MongoURI == "" }

// embeddedRedis reports whether Redis runs inside this process (miniredis).
func (c Config) embeddedRedis() bool { return c.RedisURL == "" && len(c.RedisClusterAddrs) == 0 }

// usageError is a bad command line or configuration: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// loadConfig reads the settings through getenv, falling back to .env in the working
// directory. Every bad value is reported at once.
func loadConfig(getenv func(string) string) (Config, error) {
	dotenv, err := readDotenv(".env")
	if err != nil {
		// The parser's message quotes the file from the bad line on, secrets included.
		return Config{}, usageError{"read .env: " + dotenvProblem(".env")}
	}
	get := func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return dotenv[k]
	}
	var errs []string
	bad := func(k, v, why string) { errs = append(errs, fmt.Sprintf("%s=%q: %s", k, v, why)) }
	num := func(k string, def, lo, hi int) int {
		v := get(k)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			bad(k, v, fmt.Sprintf("must be a whole number from %d to %d", lo, hi))
			return def
		}
		return n
	}
	str := func(k, def string) string {
		if v := get(k); v != "" {
			return v
		}
		return def
	}
	c := Config{
		RedisClusterAddrs:          clusterAddrs(get("REDIS_CLUSTER_ADDRS")),
		RedisClusterUsername:       get("REDIS_CLUSTER_USERNAME"),
		RedisClusterPassword:       get("REDIS_CLUSTER_PASSWORD"),
		Host:                       get("HOST"),
		Port:                       num("PORT", 3000, 0, 65535),
		RedisURL:                   get("REDIS_URL"),
		MongoURI:                   get("MONGODB_URI"),
		MongoDatabase:              str("MONGODB_DATABASE", "flashstock"),
		DataDir:                    str("DATA_DIR", "./data"),
		JWTSecret:                  get("JWT_SECRET"),
		JWTIssuer:                  str("JWT_ISSUER", "flashstock"),
		RateLimitPerMinute:         num("RATE_LIMIT_PER_MINUTE", 120, 0, 1_000_000),
		DemoAdminPassword:          get("DEMO_ADMIN_PASSWORD"),
		LoginLimitPerMinute:        num("LOGIN_LIMIT_PER_MINUTE", 10, 0, 1_000_000),
		LoginAddressLimitPerMinute: num("LOGIN_ADDRESS_LIMIT_PER_MINUTE", 30, 0, 1_000_000),
		SoldOutFor:                 time.Duration(num("SOLDOUT_CACHE_MS", 0, 0, 60_000)) * time.Millisecond,
		QueuePassTTL:               time.Duration(num("QUEUE_PASS_TTL_SECONDS", 120, 1, 86_400)) * time.Second,
		LowStockThreshold:          num("LOW_STOCK_THRESHOLD", 5, 0, 1_000_000_000),
		Role:                       str("ROLE", "all"),
		LogLevel:                   str("LOG_LEVEL", "info"),
		PprofAddr:                  str("PPROF_ADDR", ""),
		ShutdownTimeout:            time.Duration(num("SHUTDOWN_TIMEOUT_SECONDS", 15, 1, 600)) * time.Second,
		Specs: stocksync.Specs{
			HoldExpiry: str("HOLD_EXPIRY_SCHEDULE", stocksync.DefaultSpecs.HoldExpiry),
			Snapshot:   str("SNAPSHOT_SCHEDULE", stocksync.DefaultSpecs.Snapshot),
			Reconcile:  str("RECONCILE_SCHEDULE", stocksync.DefaultSpecs.Reconcile),
			Trim:       str("OUTBOX_TRIM_SCHEDULE", stocksync.DefaultSpecs.Trim),
		},
	}
	flag := func(k string, def bool) bool {
		v := get(k)
		if v == "" {
			return def
		}
		b, ok := boolSetting(v)
		if !ok {
			bad(k, v, "must be true or false")
			return def
		}
		return b
	}
	c.SeedDemo = flag("SEED_DEMO", c.Embedded())
	c.RedisClusterTLS = flag("REDIS_CLUSTER_TLS", false)
	c.RedisClusterCAFile = get("REDIS_CLUSTER_CA_FILE")
	if (c.RedisClusterTLS || c.RedisClusterCAFile != "") && len(c.RedisClusterAddrs) == 0 {
		errs = append(errs, "REDIS_CLUSTER_TLS and REDIS_CLUSTER_CA_FILE need REDIS_CLUSTER_ADDRS (for one Redis, use a rediss:// REDIS_URL)")
	}
	if c.RedisClusterCAFile != "" && !c.RedisClusterTLS {
		errs = append(errs, "REDIS_CLUSTER_CA_FILE needs REDIS_CLUSTER_TLS=true")
	}
	if c.RedisCluster, err = clusterClientOptions(c.RedisClusterUsername, c.RedisClusterPassword, c.RedisClusterTLS, c.RedisClusterCAFile); err != nil {
		errs = append(errs, err.Error())
	}
	c.webhookEnv = get
	c.Webhooks = get("WEBHOOK_SECRET_KEY") != "" || c.Embedded()
	if c.Webhooks {
		// Checked now, so a bad setting stops start-up with the others; the embedded
		// mode's own key is checked with a stand-in of the right size.
		if _, err := c.webhookConfig(strings.Repeat("0", 64)); err != nil && get("WEBHOOK_SECRET_KEY") == "" {
			errs = append(errs, err.Error())
		} else if _, err := c.webhookConfig(""); err != nil && get("WEBHOOK_SECRET_KEY") != "" {
			errs = append(errs, err.Error())
		}
	}
	c.PprofAllowRemote = flag("PPROF_ALLOW_REMOTE", false)
	if c.Host == "" && c.Embedded() {
		c.Host = "127.0.0.1"
	}
	if c.Host != "" && !validHost(c.Host) {
		bad("HOST", c.Host, "must be an IP address or a host name, without a port")
	}
	switch {
	case c.DemoAdminPassword != "" && (len(c.DemoAdminPassword) < 12 || len(c.DemoAdminPassword) > 72):
		errs = append(errs, "DEMO_ADMIN_PASSWORD must be 12 to 72 bytes")
	case c.DemoAdminPassword == "" && c.SeedDemo && !c.Embedded():
		errs = append(errs, "SEED_DEMO=true with REDIS_URL or MONGODB_URI needs DEMO_ADMIN_PASSWORD (12 to 72 bytes): "+
			"outside the embedded mode the demo admin never gets the published password")
	case c.DemoAdminPassword == "" && c.Embedded():
		c.DemoAdminPassword = embeddedAdminPassword
	}
	for _, v := range strings.Split(get("TRUSTED_PROXIES"), ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		p, err := netip.ParsePrefix(v)
		if a, aerr := netip.ParseAddr(v); aerr == nil {
			p, err = a.Prefix(a.BitLen())
		}
		if err != nil {
			bad("TRUSTED_PROXIES", v, "must be IP addresses or CIDR blocks, separated by commas")
			continue
		}
		c.TrustedProxies = append(c.TrustedProxies, p.Masked())
	}
	if c.PprofAddr != "" {
		if why := checkPprofAddr(c.PprofAddr, c.PprofAllowRemote); why != "" {
			bad("PPROF_ADDR", c.PprofAddr, why)
		}
	}
	if c.RedisURL != "" && !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") {
		bad("REDIS_URL", redact(c.RedisURL), "must start with redis:// or rediss://")
	}
	if c.MongoURI != "" && !strings.HasPrefix(c.MongoURI, "mongodb://") && !strings.HasPrefix(c.MongoURI, "mongodb+srv://") {
		bad("MONGODB_URI", redact(c.MongoURI), "must start with mongodb:// or mongodb+srv://")
	}
	errs = append(errs, c.loadCluster(num, bad)...)
	if !c.Embedded() && c.JWTSecret == "" {
		errs = append(errs, "JWT_SECRET is required when REDIS_URL or MONGODB_URI is set (only the embedded mode generates one)")
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < 32 {
		errs = append(errs, "JWT_SECRET must be at least 32 characters")
	}
	if c.Role != "all" && c.Role != "api" && c.Role != "worker" {
		bad("ROLE", c.Role, "must be all, api or worker")
	}
	if c.Role != "all" && c.Embedded() {
		errs = append(errs, "ROLE="+c.Role+" needs REDIS_URL and MONGODB_URI: embedded stores live inside one process")
	}
	if c.LogLevel != "debug" && c.LogLevel != "info" && c.LogLevel != "warn" && c.LogLevel != "error" {
		bad("LOG_LEVEL", c.LogLevel, "must be debug, info, warn or error")
	}
	for k, spec := range map[string]string{"HOLD_EXPIRY_SCHEDULE": c.Specs.HoldExpiry, "SNAPSHOT_SCHEDULE": c.Specs.Snapshot,
		"RECONCILE_SCHEDULE": c.Specs.Reconcile, "OUTBOX_TRIM_SCHEDULE": c.Specs.Trim} {
		if err := stocksync.ValidateSpec(spec); err != nil {
			bad(k, spec, "must be a cron spec with seconds, e.g. \"*/10 * * * * *\"")
		}
	}
	if len(errs) > 0 {
		return c, usageError{"invalid configuration:\n  " + strings.Join(errs, "\n  ")}
	}
	return c, nil
}

// embeddedAdminPassword is the demo admin's published password, for the embedded mode
// only (which listens on loopback unless HOST says otherwise).
const embeddedAdminPassword = "admin12345"

// validHost accepts an IP address or a DNS name: what HOST may be.
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// checkPprofAddr says what is wrong with a pprof address, or "". The profiles show
// the process's command line, memory and goroutines: they stay on loopback unless
// remote access is asked for explicitly.
func checkPprofAddr(addr string, allowRemote bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "must be host:port, e.g. 127.0.0.1:6060"
	}
	if allowRemote {
		return ""
	}
	if host == "localhost" {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return ""
	}
	return "must be a loopback address (127.0.0.1, ::1 or localhost); set PPROF_ALLOW_REMOTE=true to serve profiles on other interfaces"
}

// readDotenv reads a .env file with godotenv (KEY=VALUE lines, # comments, also after
// an unquoted value, quotes, export); a missing file is empty.
func readDotenv(path string) (map[string]string, error) {
	m, err := godotenv.Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	return m, err
}

// dotenvProblem names the first line of a .env file that is not blank, a comment or
// KEY=VALUE, without showing its content (the file holds secrets).
func dotenvProblem(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok || !envName.MatchString(strings.TrimSpace(k)) {
			return fmt.Sprintf("line %d is not KEY=VALUE (its content is not shown: the file holds secrets)", i+1)
		}
	}
	return "a value is malformed, e.g. an unclosed quote (the content is not shown: the file holds secrets)"
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// masked shows a secret's presence, never its value.
func masked(s string) string {
	if s == "" {
		return "(unset)"
	}
	return "(set, " + strconv.Itoa(len(s)) + " chars)"
}

// boolSetting reads a true/false setting ("true", "1", "yes" or "false", "0", "no");
// ok is false for anything else.
func boolSetting(v string) (val, ok bool) {
	switch v {
	case "true", "1", "yes":
		return true, true
	case "false", "0", "no":
		return false, true
	}
	return false, false
}

// clusterClientOptions is how to reach the cluster of REDIS_CLUSTER_ADDRS: its
// credentials, and with useTLS a TLS configuration trusting the CA in caFile (read
// here; "" the system's roots). serve and bench -cluster-addrs take the same settings.
func clusterClientOptions(username, password string, useTLS bool, caFile string) (rediscluster.ClientOptions, error) {
	o := rediscluster.ClientOptions{Username: username, Password: password}
	if useTLS {
		tc, err := rediscluster.TLSConfig(caFile)
		if err != nil {
			return o, fmt.Errorf("REDIS_CLUSTER_CA_FILE: %w", err)
		}
		o.TLS = tc
	}
	return o, nil
}

// clusterAddrs splits REDIS_CLUSTER_ADDRS.
func clusterAddrs(v string) []string {
	var addrs []string
	for a := range strings.SplitSeq(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// loadCluster reads and checks PARTITIONS, REDIS_WAIT_REPLICAS and REDIS_WAIT_TIMEOUT_MS
// and checks REDIS_CLUSTER_ADDRS; it returns the errors that bad does not report.
func (c *Config) loadCluster(num func(string, int, int, int) int, bad func(k, v, why string)) []string {
	var errs []string
	for _, a := range c.RedisClusterAddrs {
		host, port, err := net.SplitHostPort(a)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			bad("REDIS_CLUSTER_ADDRS", a, "must be host:port seeds separated by commas")
		}
	}
	if len(c.RedisClusterAddrs) > 0 && c.RedisURL != "" {
		errs = append(errs, "REDIS_CLUSTER_ADDRS and REDIS_URL are both set: set one (a cluster, or one Redis)")
	}
	if (c.RedisClusterUsername != "" || c.RedisClusterPassword != "") && len(c.RedisClusterAddrs) == 0 {
		errs = append(errs, "REDIS_CLUSTER_USERNAME and REDIS_CLUSTER_PASSWORD need REDIS_CLUSTER_ADDRS (for one Redis, put them in REDIS_URL)")
	}
	if c.RedisClusterUsername != "" && c.RedisClusterPassword == "" {
		errs = append(errs, "REDIS_CLUSTER_USERNAME needs REDIS_CLUSTER_PASSWORD")
	}
	def := 1
	if len(c.RedisClusterAddrs) > 0 {
		def = 16
	}
	c.Partitions = num("PARTITIONS", def, 1, engine.MaxPartitions)
	c.WaitReplicas = num("REDIS_WAIT_REPLICAS", 0, 0, 16)
	c.WaitTimeout = time.Duration(num("REDIS_WAIT_TIMEOUT_MS", 100, 1, 2000)) * time.Millisecond
	if c.WaitReplicas > 0 && c.embeddedRedis() {
		errs = append(errs, fmt.Sprintf("REDIS_WAIT_REPLICAS=%d needs REDIS_URL or REDIS_CLUSTER_ADDRS: the embedded Redis has no replicas", c.WaitReplicas))
	}
	if c.Partitions > 1 && c.embeddedRedis() {
		errs = append(errs, fmt.Sprintf("PARTITIONS=%d needs REDIS_URL or REDIS_CLUSTER_ADDRS: the embedded mode keeps one partition", c.Partitions))
	}
	return errs
}
