package api_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashstock/flashstock/api"
	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/internal/testcluster"
	"github.com/flashstock/flashstock/internal/testmongo"
	"github.com/flashstock/flashstock/internal/testredis"
	"github.com/flashstock/flashstock/store"
	stocksync "github.com/flashstock/flashstock/sync"
)

// TestProductPartitionAndGroup: a product shows its partition; SKUs created with one
// group share it; a checkout of one partition's SKUs is served, and so is one spanning
// two (bought whole through the cross-partition protocol), and that order is cancelled
// whole (units back in both partitions once, a repeat replayed); a group cannot be
// changed later.
func TestProductPartitionAndGroup(t *testing.T) {
	_, rdb := testredis.Start(t)
	inv := engine.NewRedis(rdb, engine.Options{Partitions: 8})
	t.Cleanup(inv.Close)
	st := store.New(testmongo.Database(t))
	if err := st.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := api.Config{JWTSecret: secret, JWTIssuer: issuer}
	h := &harness{app: api.New(cfg, api.Deps{Inv: inv, Store: st,
		Reconciler: &stocksync.Reconciler{Inv: inv, Store: st, Wait: time.Second}}), inv: inv, st: st, rdb: rdb, cfg: cfg}
	admin, cust := token(t, "root", api.RoleAdmin), token(t, "c1", api.RoleCustomer)

	create := func(sku, group string) int {
		t.Helper()
		extra := ""
		if group != "" {
			extra = `,"group":"` + group + `"`
		}
		r := h.do(t, "POST", "/api/v1/products", admin, `{"sku":"`+sku+`","name":"x","price":1,"currency":"USD","stock":5`+extra+`}`)
		want(t, r, 201, "")
		m := r.json(t)
		if g, _ := m["group"].(string); g != group {
			t.Fatalf("%s: group %q, want %q", sku, g, group)
		}
		return int(m["partition"].(float64))
	}
	kit := []int{create("KIT-A", "kit"), create("KIT-B", "kit"), create("KIT-C", "kit")}
	if kit[0] != kit[1] || kit[1] != kit[2] {
		t.Fatalf("a group's partitions: %v, want one", kit)
	}
	other := ""
	for i := 0; other == "" && i < 100; i++ {
		sku := fmt.Sprintf("LONE-%d", i)
		if create(sku, "") != kit[0] {
			other = sku
		}
	}
	r := h.do(t, "GET", "/api/v1/products/KIT-B", cust, "")
	if want(t, r, 200, ""); int(r.json(t)["partition"].(float64)) != kit[0] {
		t.Fatalf("GET KIT-B: %s, want partition %d", r.body, kit[0])
	}
	want(t, h.do(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"KIT-A","quantity":1},{"sku":"KIT-C","quantity":2}]}`,
		"Idempotency-Key", "k1"), 201, "")
	r = h.do(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"KIT-A","quantity":1},{"sku":"`+other+`","quantity":1}]}`,
		"Idempotency-Key", "k2") // a cross-partition cart
	want(t, r, 201, "")
	cross, _ := r.json(t)["id"].(string)
	want(t, h.do(t, "POST", "/api/v1/products", admin, `{"sku":"BAD-G","name":"x","price":1,"currency":"USD","stock":5,"group":"no spaces"}`),
		400, "validation_failed")
	want(t, h.do(t, "PATCH", "/api/v1/products/KIT-A", admin, `{"group":"other"}`), 400, "validation_failed")
	lv, err := inv.Levels(context.Background(), []string{"KIT-A", "KIT-C", other})
	if err != nil {
		t.Fatal(err)
	}
	if lv[0].Sold != 2 || lv[1].Sold != 2 || lv[2].Sold != 1 || lv[2].Reserved != 0 {
		t.Fatalf("sold %d, %d, %d: want 2, 2, 1 (the cross-partition cart bought whole, nothing left reserved)", lv[0].Sold, lv[1].Sold, lv[2].Sold)
	}
	// The cross-partition order is cancelled whole: another customer is refused, the
	// owner's first cancel returns its units in both partitions, a repeat replays it.
	want(t, h.do(t, "POST", "/api/v1/orders/"+cross+"/cancel", token(t, "c2", api.RoleCustomer), ""), 404, "not_found")
	for i := range 2 {
		r := h.do(t, "POST", "/api/v1/orders/"+cross+"/cancel", cust, "", "Idempotency-Key", fmt.Sprint("c", i))
		want(t, r, 200, "")
		if r.json(t)["status"] != "cancelled" || (i > 0) != (r.header.Get("Idempotent-Replayed") == "true") {
			t.Fatalf("cancel %d of the cross-partition order: %v %s", i, r.header, r.body)
		}
	}
	lv, err = inv.Levels(context.Background(), []string{"KIT-A", "KIT-C", other})
	if err != nil {
		t.Fatal(err)
	}
	if lv[0].Sold != 1 || lv[0].Available != 4 || lv[1].Sold != 2 || lv[2].Sold != 0 || lv[2].Available != 5 {
		t.Fatalf("after the cancel: %+v, want KIT-A 4 available 1 sold, KIT-C 2 sold, %s 5 available", lv, other)
	}
}

// TestReadyzOnCluster: on a Redis Cluster, /readyz also reports the cluster's state,
// and checkout runs through the API on it.
func TestReadyzOnCluster(t *testing.T) {
	c := testcluster.Start(t, rediscluster.Options{})
	rdb := c.Client()
	inv := engine.NewRedis(rdb, engine.Options{Partitions: 4, WaitReplicas: 1, WaitTimeout: time.Second})
	t.Cleanup(inv.Close)
	st := store.New(testmongo.Database(t))
	if err := st.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := api.Config{JWTSecret: secret, JWTIssuer: issuer}
	h := &harness{app: api.New(cfg, api.Deps{Inv: inv, Store: st,
		Reconciler: &stocksync.Reconciler{Inv: inv, Store: st, Wait: time.Second}}), inv: inv, st: st, cfg: cfg}
	r := h.do(t, "GET", "/readyz", "", "")
	want(t, r, 200, "")
	if ch := r.json(t)["checks"].(map[string]any); ch["cluster"] != "ok" || ch["redis"] != "ok" || ch["scripts"] != "ok" {
		t.Fatalf("readyz on a healthy cluster: %s", r.body)
	}
	admin, cust := token(t, "root", api.RoleAdmin), token(t, "c1", api.RoleCustomer)
	want(t, h.do(t, "POST", "/api/v1/products", admin, `{"sku":"CL","name":"x","price":1,"currency":"USD","stock":5}`), 201, "")
	want(t, h.do(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"CL","quantity":2}]}`, "Idempotency-Key", "k1"), 201, "")
	r = h.do(t, "GET", "/api/v1/inventory/CL", cust, "")
	if want(t, r, 200, ""); r.json(t)["sold"] != float64(2) {
		t.Fatalf("inventory after a checkout on the cluster: %s", r.body)
	}
}
