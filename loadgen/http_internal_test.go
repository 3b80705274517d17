package loadgen

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/flashstock/flashstock/engine"
)

// scanProblem agrees with encoding/json wherever it answers.
func TestScanProblemAgreesWithEncodingJSON(t *testing.T) {
	for _, body := range []string{
		`{"type":"t","title":"Conflict","status":409,"detail":"d","code":"out_of_stock","items":[{"sku":"A","requested":2,"available":0},{"sku":"B","requested":1,"available":-3}],"requestId":"r"}`,
		`{"type":"t","title":"Too Many Requests","status":429,"code":"rate_limited","requestId":"r"}`,
		`{"code":"out_of_stock","items":[{"available":0,"sku":"A","requested":2}]}`,
		`{"code":"x\"y"}`,
	} {
		var want struct {
			Code  string
			Items []engine.Shortage
		}
		if err := json.Unmarshal([]byte(body), &want); err != nil {
			t.Fatal(err)
		}
		code, items, ok := scanProblem([]byte(body))
		if !ok {
			continue
		}
		if code != want.Code || !reflect.DeepEqual(items, want.Items) {
			t.Errorf("%s:\n scan %q %v\n json %q %v", body, code, items, want.Code, want.Items)
		}
	}
	if _, _, ok := scanProblem([]byte(`{"type":"t","title":"Conflict","status":409,"code":"out_of_stock","items":[{"sku":"A","requested":2,"available":0}]}`)); !ok {
		t.Error("the server's own layout was declined")
	}
}
