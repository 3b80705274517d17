package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/internal/redisserver"
	"github.com/flashstock/flashstock/internal/testcluster"
	"github.com/flashstock/flashstock/internal/testmongo"
)

// syncBuffer is a log sink serve may write to while the test reads it.
type syncBuffer struct {
	mu gosync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServeOnRedisCluster: serve runs on a Redis Cluster by configuration alone
// (REDIS_CLUSTER_ADDRS, PARTITIONS, REDIS_WAIT_REPLICAS): /readyz reports the cluster,
// a product and a checkout work; without WAIT it logs what a failover can lose.
func TestServeOnRedisCluster(t *testing.T) {
	c := testcluster.Start(t, rediscluster.Options{})
	for _, tc := range []struct {
		wait    string
		wantLog string
	}{
		{"1", "acknowledged once replicas confirm it"},
		{"0", "a master's failover can lose"},
	} {
		t.Run("wait"+tc.wait, func(t *testing.T) {
			base, logs := serveOnCluster(t, c, "serve_cluster_"+tc.wait, map[string]string{
				"REDIS_WAIT_REPLICAS": tc.wait, "REDIS_WAIT_TIMEOUT_MS": "1000"})
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Fatalf("the start-up log does not say %q:\n%s", tc.wantLog, logs.String())
			}
			tok := login(t, base, "admin@example.com", "cluster-admin-pw")
			sku := "CL" + tc.wait
			post(t, base+"/api/v1/products", tok, "", `{"sku":"`+sku+`","name":"x","price":5,"currency":"USD","stock":3,"group":"g"}`, 201)
			post(t, base+"/api/v1/checkout", tok, "k-"+sku, `{"items":[{"sku":"`+sku+`","quantity":2}]}`, 201)
			res, err := http.Get(base + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			metrics, _ := io.ReadAll(res.Body)
			res.Body.Close()
			for _, series := range []string{"flashstock_redis_cluster_ok 1", `flashstock_outbox_partition_lag_entries{partition="3"}`} {
				if !strings.Contains(string(metrics), series) {
					t.Errorf("/metrics lacks %s", series)
				}
			}
			// The syncer (one reader per partition's stream) brings it to MongoDB.
			for deadline := time.Now().Add(15 * time.Second); !hasOrderOf(t, base, tok, sku); {
				if time.Now().After(deadline) {
					t.Fatalf("the order of %s never reached MongoDB\n%s", sku, logs.String())
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// serveOnCluster runs serve on cluster c (REDIS_CLUSTER_ADDRS, PARTITIONS 4, MongoDB
// database db, the demo admin's password cluster-admin-pw, and extra) until the test
// ends, and waits until /readyz says ready with the cluster ok; it returns the base URL
// and serve's log.
func serveOnCluster(t *testing.T, c *testcluster.Cluster, db string, extra map[string]string) (string, *syncBuffer) {
	t.Helper()
	port, err := redisserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PORT": strconv.Itoa(port), "REDIS_CLUSTER_ADDRS": strings.Join(c.Addrs(), ","), "PARTITIONS": "4",
		"MONGODB_URI": testmongo.URI(t), "MONGODB_DATABASE": db,
		"JWT_SECRET": strings.Repeat("c", 40), "SEED_DEMO": "true", "DEMO_ADMIN_PASSWORD": "cluster-admin-pw", "DATA_DIR": t.TempDir(),
	}
	maps.Copy(env, extra)
	inTempDir(t)
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve"}, func(k string) string { return env[k] }, logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v\n%s", err, logs.String())
		}
	})
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	var ready map[string]any
	for deadline := time.Now().Add(30 * time.Second); ; {
		if res, err := http.Get(base + "/readyz"); err == nil {
			_ = json.NewDecoder(res.Body).Decode(&ready)
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve on the cluster never got ready: %v\n%s", ready, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ch, _ := ready["checks"].(map[string]any); ch["cluster"] != "ok" {
		t.Fatalf("/readyz: %v, want cluster ok", ready)
	}
	return base, logs
}

// TestServeOnAPasswordProtectedRedisCluster: a cluster whose nodes require a password
// (requirepass), and one that also speaks TLS only, refuse a client without them; serve
// given REDIS_CLUSTER_PASSWORD (and REDIS_CLUSTER_TLS, REDIS_CLUSTER_CA_FILE) gets ready
// and sells (its scripts go through the per-node clients, which AUTH and TLS too).
func TestServeOnAPasswordProtectedRedisCluster(t *testing.T) {
	t.Run("password", func(t *testing.T) {
		const password = "cluster-node-secret"
		c := testcluster.Start(t, rediscluster.Options{Password: password})
		bare := rediscluster.NewClient(c.Addrs())
		defer bare.Close()
		if err := bare.Ping(context.Background()).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
			t.Fatalf("a client without the password: %v, want NOAUTH", err)
		}
		sellOnCluster(t, c, "serve_auth_pw", password, map[string]string{"REDIS_CLUSTER_PASSWORD": password})
	})
	t.Run("tls", func(t *testing.T) {
		const password = "cluster-tls-secret"
		files, err := rediscluster.NewTestTLS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		c := testcluster.Start(t, rediscluster.Options{Password: password, TLS: &files})
		bare := rediscluster.NewClientWith(c.Addrs(), rediscluster.ClientOptions{Password: password})
		defer bare.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := bare.Ping(ctx).Err(); err == nil {
			t.Fatal("a plain-text client reached the TLS cluster")
		}
		sellOnCluster(t, c, "serve_auth_tls", password, map[string]string{"REDIS_CLUSTER_PASSWORD": password,
			"REDIS_CLUSTER_TLS": "true", "REDIS_CLUSTER_CA_FILE": files.CAFile})
	})
}

// sellOnCluster runs serve on c with env (MongoDB database db) and sells a cart of two
// groups; serve's log must not show secret.
func sellOnCluster(t *testing.T, c *testcluster.Cluster, db, secret string, env map[string]string) {
	t.Helper()
	base, logs := serveOnCluster(t, c, db, env)
	tok := login(t, base, "admin@example.com", "cluster-admin-pw")
	post(t, base+"/api/v1/products", tok, "", `{"sku":"AUTH1","name":"x","price":5,"currency":"USD","stock":3,"group":"a"}`, 201)
	post(t, base+"/api/v1/products", tok, "", `{"sku":"AUTH2","name":"x","price":5,"currency":"USD","stock":3,"group":"b"}`, 201)
	post(t, base+"/api/v1/checkout", tok, "k-auth", `{"items":[{"sku":"AUTH1","quantity":1},{"sku":"AUTH2","quantity":1}]}`, 201)
	if strings.Contains(logs.String(), secret) {
		t.Error("serve's log shows the cluster's password")
	}
}

func login(t *testing.T, base, email, password string) string {
	t.Helper()
	body := post(t, base+"/api/v1/auth/login", "", "", `{"email":"`+email+`","password":"`+password+`"}`, 200)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	tok, _ := m["token"].(string)
	if tok == "" {
		tok, _ = m["accessToken"].(string)
	}
	if tok == "" {
		t.Fatalf("login: no token in %s", body)
	}
	return tok
}

func post(t *testing.T, url, tok, key, body string, want int) []byte {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		t.Fatalf("POST %s: %d %s, want %d", url, res.StatusCode, b, want)
	}
	return b
}

// hasOrderOf reports whether the orders list (read from MongoDB) has an order of sku.
func hasOrderOf(t *testing.T, base, tok, sku string) bool {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/api/v1/orders?limit=200", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode == 200 && strings.Contains(string(b), `"sku":"`+sku+`"`)
}
