// Package loadgen is flashstock's load tool. It drives an inventory — the engine
// directly, a running server over HTTP, or one of two baselines on bare Redis — through
// flash-sale scenarios, records every attempt, and checks the outcome against the
// product's invariants: nothing oversold, nobody refused while stock remained.
//
// Every target answers the same four questions (create the SKUs, check out, read the
// levels, and optionally hold/commit and cancel), so the figures of different targets
// come from the same driver and can be set side by side as ratios.
package loadgen

import (
	"context"
	"fmt"

	"github.com/flashstock/flashstock/engine"
)

// Outcome is how one attempt ended.
type Outcome uint8

// The outcomes of an attempt.
const (
	// OK: the units were sold (or held and committed).
	OK Outcome = iota
	// Refused: the target said no with a reason (out_of_stock, conflict, rate_limited…).
	Refused
	// Failed: no answer, or one outside the contract (timeouts, 5xx, transport errors).
	Failed
)

// Answer is what a target said to one request.
type Answer struct {
	Outcome Outcome
	// Reason is the contract's error code for Refused and Failed answers.
	Reason string
	// ID names the order (or hold) created by an OK answer.
	ID string
	// Short is the out_of_stock detail: each short line and the stock the target saw.
	Short []engine.Shortage
	// Err is the cause of a Failed answer (its Reason is the class: "timeout", "500"…).
	Err error
}

// Refusal reasons that are not a contract error code.
const (
	// ReasonConflict: the seed-style baseline gave up after its retries.
	ReasonConflict = "conflict"
	// ReasonTransport: the request got no HTTP answer.
	ReasonTransport = "transport"
)

// stockReasons are the refusals that say "not enough stock"; only these can be false.
// Others (rate_limited, purchase_limit_exceeded, sale_not_active) are refusals by policy.
var stockReasons = map[string]bool{"out_of_stock": true, ReasonConflict: true}

// Target is something that sells stock.
type Target interface {
	// Name labels the target's rows in the report.
	Name() string
	// Prepare creates each SKU with the given available stock.
	Prepare(ctx context.Context, stock map[string]int64) error
	// Checkout buys lines for buyer, once per key.
	Checkout(ctx context.Context, buyer int, key string, lines []engine.Line) Answer
	// Levels reads the live levels of skus.
	Levels(ctx context.Context, skus []string) (map[string]engine.Level, error)
}

// Holder is a target with holds: reserve, then commit.
type Holder interface {
	Reserve(ctx context.Context, buyer int, key string, lines []engine.Line) Answer
	Commit(ctx context.Context, buyer int, holdID, key string) Answer
}

// Canceller is a target that can cancel an order, returning its stock.
type Canceller interface {
	Cancel(ctx context.Context, buyer int, orderID string) Answer
}

func failed(reason string, err error) Answer {
	if err == nil {
		err = fmt.Errorf("%s", reason)
	}
	return Answer{Outcome: Failed, Reason: reason, Err: err}
}
