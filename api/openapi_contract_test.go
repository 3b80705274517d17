package api_test

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/flashstock/flashstock/api"
	"github.com/flashstock/flashstock/api/codes"
)

// The document carries contract v1.1: every problem code, outcome_unknown (503 with
// Retry-After) on the routes that change stock, 429 with Retry-After on login and
// registration, and the number bounds.
func TestOpenAPICarriesContractV11(t *testing.T) {
	doc := loadDoc(t, newHarness(t, api.Config{}))
	var documented []string
	for _, v := range doc.Components.Schemas["Problem"].Value.Properties["code"].Value.Enum {
		documented = append(documented, v.(string))
	}
	for c := range codes.Status {
		if !slices.Contains(documented, c) {
			t.Errorf("Problem.code lacks %s", c)
		}
	}
	check := func(method, path, status, word string) {
		t.Helper()
		op := doc.Paths.Find(path).GetOperation(method)
		if op == nil {
			t.Fatalf("%s %s is not documented", method, path)
		}
		r := op.Responses.Value(status)
		if r == nil || r.Value.Headers["Retry-After"] == nil || !strings.Contains(*r.Value.Description, word) {
			t.Errorf("%s %s: want a %s response naming %s, with Retry-After", method, path, status, word)
		}
	}
	for _, r := range [][2]string{{"POST", "/api/v1/checkout"}, {"POST", "/api/v1/holds"},
		{"POST", "/api/v1/holds/{id}/commit"}, {"DELETE", "/api/v1/holds/{id}"}, {"POST", "/api/v1/orders/{id}/cancel"},
		{"POST", "/api/v1/inventory/{sku}/adjustments"}, {"PUT", "/api/v1/inventory/{sku}"}} {
		check(r[0], r[1], "503", "outcome_unknown")
	}
	check("POST", "/api/v1/auth/login", "429", "rate_limited")
	check("POST", "/api/v1/auth/register", "429", "rate_limited")
	for schema, field := range map[string]string{"ProductCreate": "stock", "SetLevel": "available", "Adjustment": "delta"} {
		if m := doc.Components.Schemas[schema].Value.Properties[field].Value.Max; m == nil || *m != 1e9 {
			t.Errorf("%s.%s: maximum %v, want 1e9", schema, field, m)
		}
	}
	for _, schema := range []string{"ProductCreate", "ProductPatch"} {
		if m := doc.Components.Schemas[schema].Value.Properties["price"].Value.Max; m == nil || *m != 1e12 {
			t.Errorf("%s.price: maximum %v, want 1e12", schema, m)
		}
	}
}

// docs/API.md, the prose description, names every route the served document has and
// every problem code of package codes, with its status.
func TestAPIDocNamesEveryRouteAndCode(t *testing.T) {
	doc := loadDoc(t, newHarness(t, api.Config{}))
	b, err := os.ReadFile("../docs/API.md")
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			row := regexp.MustCompile(`(?m)^\| ` + method + " \\| `" + regexp.QuoteMeta(path) + "[`?]")
			if !row.MatchString(md) {
				t.Errorf("docs/API.md has no table row for %s %s", method, path)
			}
		}
	}
	for code, status := range codes.Status {
		row := regexp.MustCompile("(?m)^\\| `" + code + "` \\| " + strconv.Itoa(status) + " \\|")
		if !row.MatchString(md) {
			t.Errorf("docs/API.md's error table lacks %s with status %d", code, status)
		}
	}
}
