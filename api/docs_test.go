package api_test

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/flashstock/flashstock/api"
)

func loadDoc(t *testing.T, h *harness) *openapi3.T {
	t.Helper()
	r := h.do(t, "GET", "/api/openapi.json", "", "")
	want(t, r, 200, "")
	doc, err := openapi3.NewLoader().LoadFromData(r.body)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background(), openapi3.EnableExamplesValidation()); err != nil {
		t.Fatalf("the OpenAPI document is invalid: %v", err)
	}
	return doc
}

// The document and the router name exactly the same routes.
func TestOpenAPIMatchesTheRouter(t *testing.T) {
	h := newHarness(t, api.Config{})
	doc := loadDoc(t, h)
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	param := regexp.MustCompile(`:(\w+)`)
	var routed []string
	for _, r := range h.app.GetRoutes(true) {
		if r.Method == "HEAD" || strings.ContainsAny(r.Path, "*") || r.Path == "/" || r.Path == "/api/oauth2-redirect.html" {
			continue // HEAD twins of GETs, Swagger UI assets, the not-found fallback
		}
		routed = append(routed, r.Method+" "+param.ReplaceAllString(r.Path, "{$1}"))
	}
	// The harness has no metrics; the binary serves /metrics (see cmd's end-to-end test).
	routed = append(routed, "GET /metrics")
	slices.Sort(documented)
	slices.Sort(routed)
	routed = slices.Compact(routed)
	if !slices.Equal(documented, routed) {
		t.Fatalf("document and router differ:\ndocumented %v\nrouted     %v", documented, routed)
	}
}

// Real answers fit the document's schemas (which refuse unknown fields).
func TestResponsesFitTheSchemas(t *testing.T) {
	h := newHarness(t, api.Config{})
	doc := loadDoc(t, h)
	cust, admin := token(t, "c1", api.RoleCustomer), token(t, "root", api.RoleAdmin)
	h.product(t, "TV", 5, "")
	check := func(schema string, r resp) {
		t.Helper()
		var v any
		if err := json.Unmarshal(r.body, &v); err != nil {
			t.Fatal(err)
		}
		if err := doc.Components.Schemas[schema].Value.VisitJSON(v); err != nil {
			t.Errorf("%s does not fit its schema: %v\n%s", schema, err, r.body)
		}
	}
	check("Product", h.do(t, "GET", "/api/v1/products/TV", cust, ""))
	check("ProductPage", h.do(t, "GET", "/api/v1/products", cust, ""))
	check("Level", h.do(t, "GET", "/api/v1/inventory/TV", cust, ""))
	check("Cart", h.do(t, "PUT", "/api/v1/cart/items/TV", cust, `{"quantity":1}`))
	order := h.do(t, "POST", "/api/v1/checkout", cust, "")
	check("Order", order)
	check("Problem", h.do(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"TV","quantity":9}]}`))
	hold := h.do(t, "POST", "/api/v1/holds", cust, `{"items":[{"sku":"TV","quantity":1}]}`)
	check("Hold", hold)
	check("User", h.do(t, "GET", "/api/v1/auth/me", cust, ""))
	check("BulkReport", h.do(t, "POST", "/api/v1/carts/bulk-checkout", admin, `{"items":[{"sku":"TV","quantity":1}],"buyers":5,"concurrency":2}`))
	check("ReconcileReport", h.do(t, "POST", "/api/v1/admin/reconcile", admin, ""))
	check("Ready", h.do(t, "GET", "/readyz", "", ""))
	h.product(t, "ROOM", 1, `,"waitingRoom":{"enabled":true,"admitPerMinute":60}`)
	check("Product", h.do(t, "GET", "/api/v1/products/ROOM", cust, ""))
	check("QueueTicket", h.do(t, "POST", "/api/v1/queue/ROOM", cust, ""))  // admitted: with its pass
	check("QueueTicket", h.do(t, "POST", "/api/v1/queue/ROOM", admin, "")) // waiting
	check("Problem", h.do(t, "POST", "/api/v1/checkout", admin, `{"items":[{"sku":"ROOM","quantity":1}]}`))
}

// Swagger UI is served from the binary: the page and every script and stylesheet it
// loads.
func TestSwaggerUIWorksOffline(t *testing.T) {
	h := newHarness(t, api.Config{})
	r := h.do(t, "GET", "/api", "", "")
	if r.status != 200 || !strings.Contains(r.header.Get("Content-Type"), "text/html") || !strings.Contains(string(r.body), "/api/openapi.json") {
		t.Fatalf("/api: %d %s", r.status, r.body)
	}
	assets := regexp.MustCompile(`(?:src|href)="(/api/[^"]+\.(?:js|css))"`).FindAllStringSubmatch(string(r.body), -1)
	if len(assets) < 3 {
		t.Fatalf("the page references %d scripts and stylesheets: %s", len(assets), r.body)
	}
	for _, a := range assets {
		res := h.do(t, "GET", a[1], "", "")
		if res.status != 200 || len(res.body) < 1000 {
			t.Errorf("%s: %d, %d bytes", a[1], res.status, len(res.body))
		}
	}
}
