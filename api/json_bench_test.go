package api

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/flashstock/flashstock/engine"
)

// The same-run comparison behind the choice of the checkout path's JSON (see
// docs/BENCHMARKS.md): the hand-written plain-form codec against goccy/go-json and
// encoding/json, for the checkout body, the order answer and the problem answer.

var benchBody = []byte(`{"items":[{"sku":"HOT-1","quantity":1}]}`)

var benchOrder = engine.Order{ID: "0193a6d2-6f0e-7a3c-9b1e-2f4c5d6e7f80", UserID: "buyer-123",
	Items: []engine.Item{{SKU: "HOT-1", Quantity: 1, UnitPrice: 49900}}, Total: 49900, Currency: "USD",
	Status: engine.OrderConfirmed, CreatedAt: time.Date(2026, 12, 2, 3, 0, 0, 123e6, time.UTC)}

var benchProblem = Problem{Type: "https://flashstock.dev/problems/out_of_stock", Title: "Conflict", Status: 409,
	Detail: "not enough stock for every line", Code: "out_of_stock", RequestID: "a1b2c3-42",
	Items: []engine.Shortage{{SKU: "HOT-1", Requested: 1, Available: 0}}}

func BenchmarkJSONCheckoutBody(b *testing.B) {
	b.Run("hand-written", func(b *testing.B) {
		for b.Loop() {
			if _, _, ok := parseItems(benchBody); !ok {
				b.Fatal("declined")
			}
		}
	})
	b.Run("goccy", func(b *testing.B) {
		for b.Loop() {
			var in itemsInput
			dec := gojson.NewDecoder(bytes.NewReader(benchBody))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			var in itemsInput
			if _, err := decodeStrict(benchBody, &in, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkJSONOrderAnswer(b *testing.B) {
	var buf [1024]byte
	b.Run("hand-written", func(b *testing.B) {
		for b.Loop() {
			_ = appendOrder(buf[:0], &benchOrder)
		}
	})
	b.Run("goccy", func(b *testing.B) {
		for b.Loop() {
			if _, err := gojson.Marshal(&benchOrder); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(&benchOrder); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkJSONProblemAnswer(b *testing.B) {
	var buf [1024]byte
	b.Run("hand-written", func(b *testing.B) {
		for b.Loop() {
			_ = appendProblem(buf[:0], &benchProblem)
		}
	})
	b.Run("goccy", func(b *testing.B) {
		for b.Loop() {
			if _, err := gojson.Marshal(&benchProblem); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(&benchProblem); err != nil {
				b.Fatal(err)
			}
		}
	})
}
