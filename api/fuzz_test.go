package api_test

import (
	"testing"

	"github.com/flashstock/flashstock/api"
)

// FuzzRequestBodies throws arbitrary bodies at the routes that decode JSON. No input may
// panic the server or get a 5xx: bad input is a 4xx problem. Seeds live in
// testdata/fuzz/FuzzRequestBodies; run longer with
// go test ./api -run '^$' -fuzz FuzzRequestBodies -fuzztime 60s
func FuzzRequestBodies(f *testing.F) {
	for _, s := range []string{
		`{"items":[{"sku":"A","quantity":1}]}`, `{"items":[{"sku":"A","quantity":1e400}]}`, `{"items":null}`,
		`[]`, `"x"`, `{"items":[{"sku":"\u0000","quantity":-9223372036854775808}]}`, `{"quantity":3}`,
		`{"delta":9223372036854775807,"reason":"x"}`, `{"available":1,"expectedVersion":-1}`, `{`, ``,
	} {
		f.Add(s)
	}
	h := newHarness(f, api.Config{})
	h.product(f, "A", 1_000_000, "")
	cust, admin := token(f, "c", api.RoleCustomer), token(f, "root", api.RoleAdmin)
	routes := []struct{ method, path, tok string }{
		{"POST", "/api/v1/checkout", cust},
		{"POST", "/api/v1/holds", cust},
		{"PUT", "/api/v1/cart/items/A", cust},
		{"POST", "/api/v1/auth/register", ""},
		{"POST", "/api/v1/auth/login", ""},
		{"POST", "/api/v1/inventory/A/adjustments", admin},
		{"PUT", "/api/v1/inventory/A", admin},
		{"PATCH", "/api/v1/products/A", admin},
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, rt := range routes {
			r := h.do(t, rt.method, rt.path, rt.tok, body)
			if r.status >= 500 {
				t.Fatalf("%s %s with %q: %d %s", rt.method, rt.path, body, r.status, r.body)
			}
		}
	})
}
