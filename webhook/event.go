package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	"github.com/flashstock/flashstock/engine"
)

// Event types, as the contract names them.
const (
	OrderConfirmed = "order.confirmed"
	OrderCancelled = "order.cancelled"
	HoldExpired    = "hold.expired"
	LowStock       = "inventory.low_stock"     // available fell to the threshold or below
	SoldOut        = "inventory.sold_out"      // available reached 0
	BackInStock    = "inventory.back_in_stock" // available rose from 0
)

// Types lists every event type, in a stable order.
var Types = []string{OrderConfirmed, OrderCancelled, HoldExpired, LowStock, SoldOut, BackInStock}

// KnownType reports whether t is an event type.
func KnownType(t string) bool {
	for _, k := range Types {
		if k == t {
			return true
		}
	}
	return false
}

// Event is one webhook event. ID is deterministic (see Derive): the same change always
// yields the same ID, which receivers dedupe on.
type Event struct {
	ID   string
	Type string
	At   time.Time // when the change happened (the outbox event's time)
	Data any       // marshalled as "data"
}

// Body is the request body: {"type","timestamp","data"}, timestamp in RFC 3339 (UTC).
// It depends only on the event, so a redelivered event has the same body.
func (e Event) Body() ([]byte, error) {
	return json.Marshal(struct {
		Type      string    `json:"type"`
		Timestamp time.Time `json:"timestamp"`
		Data      any       `json:"data"`
	}{e.Type, e.At.UTC(), e.Data})
}

// StockData is the data of inventory events.
type StockData struct {
	SKU       string `json:"sku"`
	Available int64  `json:"available"`
	Reserved  int64  `json:"reserved"`
	Sold      int64  `json:"sold"`
	Version   int64  `json:"version"`
}

// HoldData is the data of hold.expired.
type HoldData struct {
	ID    string        `json:"id"`
	Items []engine.Item `json:"items"`
}

// LevelChange is what one movement did to one SKU's levels: what the threshold events
// are computed from. The outbox's movements carry deltas only; the levels after the
// movement must come with them (see ChangeOf).
type LevelChange struct {
	SKU             string
	Seq             int64 // the SKU's movement sequence number: with SKU, the change's identity
	AvailableBefore int64
	Available       int64 // after the movement
	Reserved        int64 // after
	Sold            int64 // after
	Version         int64 // the SKU's version after the movement
}

// ChangeOf builds the LevelChange of movement m from the levels after it; the level
// before is after minus the movement's delta.
func ChangeOf(m engine.Movement, after engine.Level) LevelChange {
	return LevelChange{SKU: m.SKU, Seq: m.Seq, AvailableBefore: after.Available - m.Available,
		Available: after.Available, Reserved: after.Reserved, Sold: after.Sold, Version: after.Version}
}

// Source is what Derive reads: one outbox event and, for each of its movements, the
// level change it made.
type Source struct {
	Event engine.Event
	// Changes are the level changes of Event's movements, in any order. Without them
	// no inventory events are derived.
	Changes []LevelChange
	// Order, if set, is the order an order or cancel event is about, as stored; it is
	// the data of order.confirmed and order.cancelled. Without it the order is rebuilt
	// from the event, which for a cancel (the outbox's cancel carries no lines) gives
	// items from the movements, without prices, and no total or currency.
	Order *engine.Order
}

// Derive returns the webhook events an outbox event implies, in a deterministic order
// with deterministic ids: order.confirmed and order.cancelled keyed by the order id,
// hold.expired by the hold id, the inventory events by (type, SKU, movement seq). A
// threshold event fires on the movement that crosses it, so once per crossing:
//
//   - inventory.low_stock: before > threshold and after ≤ threshold (with a threshold of
//     0 it never fires: sold_out says it)
//   - inventory.sold_out: before > 0 and after = 0
//   - inventory.back_in_stock: before = 0 and after > 0
//
// A fall from above the threshold straight to 0 gives both low_stock and sold_out.
func Derive(src Source, threshold int64) []Event {
	e := src.Event
	var out []Event
	switch e.Kind {
	case engine.EventOrder:
		out = append(out, Event{ID: EventID(OrderConfirmed, e.ID), Type: OrderConfirmed, At: e.At,
			Data: orderOf(src, engine.OrderConfirmed)})
	case engine.EventCancel:
		out = append(out, Event{ID: EventID(OrderCancelled, e.ID), Type: OrderCancelled, At: e.At,
			Data: orderOf(src, engine.OrderCancelled)})
	case engine.EventExpire:
		items := e.Items
		if items == nil {
			items = []engine.Item{}
		}
		out = append(out, Event{ID: EventID(HoldExpired, e.ID), Type: HoldExpired, At: e.At,
			Data: HoldData{ID: e.ID, Items: items}})
	}
	for _, c := range src.Changes {
		out = append(out, StockEvents(c, threshold, e.At)...)
	}
	return out
}

// StockEvents returns the inventory events of one level change (see Derive).
func StockEvents(c LevelChange, threshold int64, at time.Time) []Event {
	data := StockData{SKU: c.SKU, Available: c.Available, Reserved: c.Reserved, Sold: c.Sold, Version: c.Version}
	var out []Event
	add := func(typ string) {
		out = append(out, Event{ID: EventID(typ, c.SKU, strconv.FormatInt(c.Seq, 10)), Type: typ, At: at, Data: data})
	}
	before, after := c.AvailableBefore, c.Available
	if threshold > 0 && before > threshold && after <= threshold {
		add(LowStock)
	}
	if before > 0 && after == 0 {
		add(SoldOut)
	}
	if before == 0 && after > 0 {
		add(BackInStock)
	}
	return out
}

// orderOf is the order an order event is about.
func orderOf(src Source, status engine.OrderStatus) engine.Order {
	if src.Order != nil {
		o := *src.Order
		o.Status = status
		return o
	}
	e := src.Event
	o := engine.Order{ID: e.ID, UserID: e.UserID, Items: e.Items, Currency: e.Currency, Status: status,
		CreatedAt: e.At, HoldID: e.HoldID}
	if len(o.Items) == 0 && status == engine.OrderCancelled {
		for _, m := range e.Movements {
			o.Items = append(o.Items, engine.Item{SKU: m.SKU, Quantity: -m.Sold})
		}
	}
	if o.Items == nil {
		o.Items = []engine.Item{}
	}
	for _, it := range o.Items {
		o.Total += it.Quantity * it.UnitPrice
	}
	return o
}

// EventID is the deterministic id of an event: "evt_" and 32 hex digits of the SHA-256
// of its type and identity parts.
func EventID(typ string, parts ...string) string {
	h := sha256.New()
	h.Write([]byte(typ))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return "evt_" + hex.EncodeToString(h.Sum(nil)[:16])
}
