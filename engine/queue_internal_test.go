package engine

import (
	"context"
	"testing"
	"time"

	"github.com/flashstock/flashstock/internal/testredis"
)

// Two requests of one batch carrying the same pass: the first spends it, the second is
// refused, though the pass is only removed in the batch's second phase.
func TestOnePassTwiceInOneBatch(t *testing.T) {
	_, c := testredis.Start(t)
	r := NewRedis(c, Options{})
	t.Cleanup(r.Close)
	ctx := context.Background()
	past := time.Now().Add(-time.Second)
	if _, err := r.CreateProduct(ctx, Product{SKU: "R", Stock: 5, Price: 1, Currency: "USD", SaleStartsAt: &past,
		WaitingRoom: &WaitingRoom{Enabled: true, AdmitPerMinute: 600}}); err != nil {
		t.Fatal(err)
	}
	tk, err := r.JoinQueue(ctx, "R", "u")
	if err != nil || tk.Status != QueueAdmitted {
		t.Fatalf("join: got %+v %v, want admitted", tk, err)
	}
	first, second := orderReq(ctx, "o-1"), orderReq(ctx, "o-2")
	batch := []*takeReq{first, second}
	for _, req := range batch {
		req.lines, req.pass, req.done = []Line{{SKU: "R", Quantity: 1}}, tk.Pass, make(chan struct{})
	}
	r.parts[0].batch.exec(batch) // one script call for both
	if first.err != nil || first.rep.status() != "ok" {
		t.Fatalf("first request: got %v %v, want ok", first.err, first.rep)
	}
	if second.err != nil || second.rep.status() != "pass" {
		t.Fatalf("second request with the same pass: got %v %v, want refused for want of a pass", second.err, second.rep)
	}
}
