package engine

import (
	"testing"
	"time"
)

// A refusal Redis decided before units came back, answered after the process cleared
// its marks, must not mark the SKU again over the returned units.
func TestStaleRefusalDoesNotMarkOverReturnedStock(t *testing.T) {
	s := &soldOut{ttl: time.Hour, until: map[string]int64{}}
	refusal := &StockError{Short: []Shortage{{SKU: "A", Requested: 1, Available: 0}}}
	lines := []Line{{SKU: "A", Quantity: 1}}

	sent := s.now()
	s.clear([]string{"A"}) // a cancel returned units of A while the request was out
	s.mark(refusal, sent)
	if err := s.refuse(lines); err != nil {
		t.Fatalf("a stale refusal marked A over returned stock: %v", err)
	}
	// With no return meanwhile, the refusal marks.
	s.mark(refusal, s.now())
	if err := s.refuse(lines); err == nil {
		t.Fatal("a current refusal did not mark A")
	}
}

// While this process is running an operation that may return units, nothing is
// refused in-process and no refusal marks: the return could land at any instant.
func TestNoMarksWhileARestockIsInFlight(t *testing.T) {
	r := &Redis{soldOut: &soldOut{ttl: time.Hour, until: map[string]int64{}}}
	s := r.soldOut
	refusal := &StockError{Short: []Shortage{{SKU: "A", Requested: 1, Available: 0}}}
	lines := []Line{{SKU: "A", Quantity: 1}}
	s.mark(refusal, s.now())
	done := r.restocking()
	if err := s.refuse(lines); err != nil {
		t.Fatalf("refused in-process while a restock is in flight: %v", err)
	}
	s.clear([]string{"A"})
	s.mark(refusal, s.now()) // a refusal answered while the restock is still out
	done()
	if err := s.refuse(lines); err != nil {
		t.Fatalf("a refusal during the restock marked A: %v", err)
	}
}
