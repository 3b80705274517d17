// Package engine is flashstock's inventory domain: the types (Line, Order, Hold, Level,
// Movement), the errors every layer speaks, and the Inventory interface, implemented on
// Redis by running one atomic Lua script per operation.
package engine

import (
	"time"
)

// Line is one requested SKU and quantity.
type Line struct {
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}

// Item is a line of an order or hold with its unit price, in minor units, snapshotted
// when the units were taken.
type Item struct {
	SKU       string `json:"sku"`
	Quantity  int64  `json:"quantity"`
	UnitPrice int64  `json:"unitPrice" bson:"unitPrice"`
}

// OrderStatus is the state of an order.
type OrderStatus string

// Order states.
const (
	OrderConfirmed OrderStatus = "confirmed"
	OrderCancelled OrderStatus = "cancelled"
)

// Order is a confirmed purchase.
type Order struct {
	ID        string      `json:"id"`
	UserID    string      `json:"userId"`
	Items     []Item      `json:"items"`
	Total     int64       `json:"total"`
	Currency  string      `json:"currency"`
	Status    OrderStatus `json:"status"`
	CreatedAt time.Time   `json:"createdAt"`
	// HoldID names the hold this order committed, if any.
	HoldID string `json:"holdId,omitempty"`
	// Replayed is true when the call returned an earlier result for the same
	// idempotency key (or an already settled transition) instead of acting again.
	Replayed bool `json:"-"`
	// PassesSpent names the SKUs whose waiting-room pass this checkout spent.
	PassesSpent []string `json:"-"`

	lines string     // the record's lines as stored, which scripts check reads against
	part  *partition // where the record lives (nil: partition 0)
	fp    string     // the request fingerprint the record keeps (idempotency)
}

// HoldStatus is the state of a hold.
type HoldStatus string

// Hold states. Only an active hold can change state.
const (
	HoldActive    HoldStatus = "active"
	HoldCommitted HoldStatus = "committed"
	HoldReleased  HoldStatus = "released"
	HoldExpired   HoldStatus = "expired"
)

// Hold is a reservation: units moved from available to reserved until it is committed
// (reserved → sold), released or expired (reserved → available).
type Hold struct {
	ID        string     `json:"id"`
	UserID    string     `json:"userId"`
	Items     []Item     `json:"items"`
	Currency  string     `json:"currency"`
	Status    HoldStatus `json:"status"`
	CreatedAt time.Time  `json:"createdAt"`
	ExpiresAt time.Time  `json:"expiresAt"`
	// OrderID is set once the hold is committed.
	OrderID  string `json:"orderId,omitempty"`
	Replayed bool   `json:"-"`
	// PassesSpent names the SKUs whose waiting-room pass this hold spent.
	PassesSpent []string `json:"-"`

	lines string     // as Order.lines
	part  *partition // as Order.part
}

// Level is a SKU's live stock. Version is the SKU's movement sequence number: it grows by
// one with every movement and is the compare-and-set token of SetLevel.
type Level struct {
	SKU       string `json:"sku"`
	Available int64  `json:"available"`
	Reserved  int64  `json:"reserved"`
	Sold      int64  `json:"sold"`
	Version   int64  `json:"version"`
	Replayed  bool   `json:"-"`
	// Partition is the SKU's partition (set by Lookup, Levels and CreateProduct).
	Partition int `json:"-"`
}

// Product is what the engine keeps of a SKU besides its levels: what checkout needs to
// price an order and to enforce the sale rules.
type Product struct {
	SKU      string
	Stock    int64 // initial available units (creation only)
	Price    int64 // minor units
	Currency string
	// MaxPerUser caps the units one user may ever take of this SKU (0 = no cap).
	MaxPerUser int64
	// SaleStartsAt and SaleEndsAt bound the sale window; nil leaves that side open.
	SaleStartsAt *time.Time
	SaleEndsAt   *time.Time
	// WaitingRoom, if set and enabled, puts the SKU's buyers through a waiting room.
	WaitingRoom *WaitingRoom
	// Group, at creation, puts the SKU in its group's partition (SKUs bought together
	// must share one); without it the SKU's own hash picks. See Redis.PartitionOf.
	Group string
}

// ProductPatch changes sale attributes; nil fields stay as they are. A sale window
// bound set to the zero time opens that side of the window.
type ProductPatch struct {
	Price        *int64
	Currency     *string
	MaxPerUser   *int64
	SaleStartsAt *time.Time
	SaleEndsAt   *time.Time
	// WaitingRoom enables, changes or disables the SKU's waiting room. Disabling it
	// discards its queue and passes; enabling it again opens an empty room.
	WaitingRoom *WaitingRoom
}

// CheckoutRequest buys Lines for UserID at once, or nothing.
type CheckoutRequest struct {
	UserID string
	Lines  []Line
	// IdempotencyKey, when set, makes a retry return the original order. The order's
	// id is then derived from (UserID, IdempotencyKey), so OrderID is ignored: a retry
	// names the same order, and that order is its own idempotency record.
	IdempotencyKey string
	// OrderID is the id the new order gets without an idempotency key (see NewID).
	OrderID string
	// Cart says the lines are the caller's cart: the request is "buy my cart", so a
	// retry under the same key replays the order even if the cart changed since, and
	// a buy-now under that key is another request (ErrIdempotencyKeyReused).
	Cart bool
	// RatePerMinute, if positive, caps the user's checkouts and reservations per clock
	// minute, counted in the same script call (see RateLimitKey); over it the request
	// fails with a *RateError.
	RatePerMinute int
	// QueuePass is the Queue-Pass header: the passes for the lines whose SKU has an
	// enabled waiting room (see ValidQueuePass). The checkout spends them if it succeeds.
	QueuePass string
}

// ReserveRequest holds Lines for UserID for TTL, at once or nothing.
type ReserveRequest struct {
	UserID string
	Lines  []Line
	TTL    time.Duration
	// IdempotencyKey works as in CheckoutRequest: the hold id is derived from it and
	// HoldID is ignored.
	IdempotencyKey string
	HoldID         string
	// RatePerMinute and QueuePass work as in CheckoutRequest.
	RatePerMinute int
	QueuePass     string
}

// AdjustRequest changes a SKU's available units by Delta (restock or removal).
type AdjustRequest struct {
	SKU            string
	Delta          int64
	Reason         string
	Actor          string
	IdempotencyKey string
}

// SetRequest sets a SKU's available units to Available if its version still equals
// ExpectedVersion.
type SetRequest struct {
	SKU             string
	Available       int64
	ExpectedVersion int64
	Reason          string
	Actor           string
}
