package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/flashstock/flashstock/internal/redisserver"
)

// proc is the real binary running in embedded mode.
type proc struct {
	cmd      *exec.Cmd
	base     string
	mongoURI string
	addr     string // the address the server says it listens on
	logs     *strings.Builder
}

func startBinary(t *testing.T, bin, dataDir string) *proc {
	t.Helper()
	port, err := redisserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve")
	cmd.Dir = dataDir
	// HOST unset: the embedded mode must choose loopback by itself.
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port), "DATA_DIR="+dataDir, "JWT_SECRET="+strings.Repeat("e", 40), "HOST=")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, base: fmt.Sprintf("http://127.0.0.1:%d", port), logs: &strings.Builder{}}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			p.logs.WriteString(line + "\n")
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil {
				if u, ok := m["uri"].(string); ok {
					p.mongoURI = u
				}
				if m["msg"] == "flashstock ready" {
					p.addr, _ = m["addr"].(string)
					close(ready)
				}
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the binary did not get ready:\n%s", p.logs)
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *proc) stop(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("the binary did not stop on SIGINT")
	}
}

func (p *proc) call(t *testing.T, method, path, tok, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, p.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return res.StatusCode, m
}

func (p *proc) login(t *testing.T, email, password string) string {
	t.Helper()
	st, m := p.call(t, "POST", "/api/v1/auth/login", "", `{"email":"`+email+`","password":"`+password+`"}`)
	if st != 200 {
		t.Fatalf("login %s: %d %v", email, st, m)
	}
	return m["accessToken"].(string)
}

// buildBinary builds this command into a fresh directory and returns the binary's path
// and an empty data directory beside it.
func buildBinary(t *testing.T) (bin, data string) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "flashstock")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	data = filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o750); err != nil {
		t.Fatal(err)
	}
	return bin, data
}

func TestBinaryEmbeddedModeSurvivesARestart(t *testing.T) {
	bin, data := buildBinary(t)
	p := startBinary(t, bin, data)
	// The demo admin's password is published: the embedded mode listens on loopback only.
	if want := strings.TrimPrefix(p.base, "http://"); p.addr != want {
		t.Fatalf("embedded mode listens on %q, want %q", p.addr, want)
	}
	admin := p.login(t, "admin@example.com", "admin12345")
	cust := p.login(t, "customer7@example.com", "customer12345")
	if st, m := p.call(t, "GET", "/api/v1/auth/me", admin, ""); st != 200 || m["role"] != "admin" {
		t.Fatalf("admin me: %d %v", st, m)
	}
	st, order := p.call(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"TV","quantity":2},{"sku":"APPLE","quantity":1}]}`)
	if st != 201 {
		t.Fatalf("checkout: %d %v", st, order)
	}
	id := order["id"].(string)

	// The syncer puts the order into MongoDB (the embedded FerretDB).
	mc, err := mongo.Connect(context.Background(), options.Client().ApplyURI(p.mongoURI))
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Disconnect(context.Background())
	var doc bson.M
	deadline := time.Now().Add(15 * time.Second)
	for {
		err = mc.Database("flashstock").Collection("orders").FindOne(context.Background(), bson.M{"_id": id}).Decode(&doc)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || doc["userId"] != "customer7" || doc["status"] != "confirmed" || doc["total"].(int64) != 2*49999+99 {
		t.Fatalf("order in MongoDB: %v, %v", doc, err)
	}
	// A refusal too, so the conflict counter has a series.
	if st, _ := p.call(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"TV","quantity":1000}]}`); st != 409 {
		t.Fatalf("oversized checkout: %d", st)
	}
	checkMetrics(t, p)
	mc.Disconnect(context.Background())
	p.stop(t)

	// Restart on the same data: Redis is rebuilt from MongoDB, the order is still there.
	p = startBinary(t, bin, data)
	if !strings.Contains(p.logs.String(), "rebuilt live stock from MongoDB") {
		t.Fatalf("no rebuild log line:\n%s", p.logs)
	}
	cust = p.login(t, "customer7@example.com", "customer12345")
	if st, m := p.call(t, "GET", "/api/v1/inventory/TV", cust, ""); st != 200 || m["available"].(float64) != 18 || m["sold"].(float64) != 2 {
		t.Fatalf("TV after restart: %d %v", st, m)
	}
	if st, m := p.call(t, "GET", "/api/v1/orders/"+id, cust, ""); st != 200 || m["status"] != "confirmed" {
		t.Fatalf("order after restart: %d %v", st, m)
	}
	if st, m := p.call(t, "GET", "/api/v1/orders", cust, ""); st != 200 || len(m["items"].([]any)) != 1 {
		t.Fatalf("order list after restart: %d %v", st, m)
	}
}

// checkMetrics reads /metrics and checks the series operators alert on are there.
func checkMetrics(t *testing.T, p *proc) {
	t.Helper()
	res, err := http.Get(p.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	body := string(b)
	for _, series := range []string{
		`flashstock_checkout_attempts_total{operation="checkout",outcome="ok"} 1`,
		`flashstock_checkout_attempts_total{operation="checkout",outcome="out_of_stock"} 1`,
		`flashstock_stock_conflicts_total{code="out_of_stock"} 1`,
		`flashstock_stock_available{sku="TV"} 18`,
		`flashstock_stock_low{sku="TV"} 0`,
		`flashstock_holds_active 0`,
		`flashstock_outbox_lag_entries`,
		`flashstock_syncer_errors_total 0`,
		`flashstock_http_request_duration_seconds_count{method="POST",route="/api/v1/checkout",status="201"} 1`,
		`flashstock_redis_command_duration_seconds_bucket{command="evalsha"`,
		`flashstock_mongodb_command_duration_seconds_bucket{command="insert",result="ok"`,
		`flashstock_holds_expired_total 0`,
	} {
		if !strings.Contains(body, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}
