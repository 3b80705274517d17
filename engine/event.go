package engine

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Event kinds: what an outbox entry records.
const (
	EventOrder   = "order"   // a confirmed order (a checkout, or a hold's commit when HoldID is set)
	EventCancel  = "cancel"  // an order cancelled
	EventHold    = "hold"    // a hold placed
	EventRelease = "release" // a hold released
	EventExpire  = "expire"  // a hold expired
	EventCreate  = "create"  // a SKU created with its initial stock
	EventAdjust  = "adjust"  // an administrative delta
	EventSet     = "set"     // an administrative compare-and-set
	EventDrift   = "drift"   // a change Redis showed that no movement recorded (found by reconciliation)
	EventRepair  = "repair"  // the movement that compensates a drift
	EventRebuild = "rebuild" // units of holds lost with Redis's data, released after a rebuild
	// EventXRestore is the return of a cross-partition order's lines in one of its other
	// partitions by the order's cancel (scripts/lua/xcancel.lua): stock movements only
	// (kind "xrestore", Ref the order id), applied like xcart.lua's xreserve, xcommit
	// and xabort; the order's status comes from its one cancel event, at its home.
	EventXRestore = "xrestore"
)

// Event is one outbox event as the scripts wrote it. An outbox entry holds one or more.
type Event struct {
	StreamID string // the id of the outbox entry that holds the event
	Kind     string // one of the Event* constants
	ID       string // order or hold id (order, cancel, hold, release, expire)
	SKU      string // create, adjust, set, repair
	UserID   string
	At       time.Time
	Currency string
	Items    []Item
	// Lines are Items as the script recorded them ("sku:qty:price", ":L" marking units
	// counted against a per-user limit): what a record written back needs.
	Lines     string
	HoldID    string    // order from a hold's commit
	ExpiresAt time.Time // hold
	Reason    string
	Actor     string
	Movements []Movement
}

// Movement is one change to one SKU's levels. (SKU, Seq) identifies it: Seq is the SKU's
// movement sequence number, so folding a SKU's movements up to Seq gives its levels then.
type Movement struct {
	SKU       string
	Seq       int64
	Kind      string // sale, cancel, reserve, commit, release, expire, create, adjust, set, drift, repair, rebuild
	Available int64  // delta
	Reserved  int64  // delta
	Sold      int64  // delta
	Ref       string // order or hold id, if any
	Reason    string
	At        time.Time
	// After is the SKU's levels right after the movement (Version is Seq), from the
	// entry's field L; HasAfter is false for entries written without it.
	After    Level
	HasAfter bool
}

// ID is the movement's deterministic ledger id.
func (m Movement) ID() string { return m.SKU + ":" + strconv.FormatInt(m.Seq, 10) }

// DecodeEntry parses an outbox entry: one or more events, in fields "0", "1", ... (see
// scripts/lua/prelude.lua), and field L, the levels after the entry of each SKU it
// moved, from which every movement's levels after it are set (Movement.After). Every
// event carries the entry's id as StreamID. Entries of every format written so far
// decode (stream entries outlive deploys); one without L has no levels.
func DecodeEntry(streamID string, values map[string]any) ([]Event, error) {
	var out []Event
	for i := 0; ; i++ {
		v, ok := values[strconv.Itoa(i)]
		if !ok {
			break
		}
		e, err := decodeEvent(streamID, asString(v))
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("outbox entry %s: no events", streamID)
	}
	if l, ok := values["L"]; ok && asString(l) != "" {
		after, err := parseLevels(asString(l))
		if err != nil {
			return nil, fmt.Errorf("outbox entry %s: %w", streamID, err)
		}
		setAfter(out, after)
	}
	return out, nil
}

// parseLevels reads field L: "sku:available:reserved:sold:seq" joined by ",".
func parseLevels(s string) (map[string]Level, error) {
	out := map[string]Level{}
	for part := range strings.SplitSeq(s, ",") {
		f := strings.Split(part, ":")
		if len(f) != 5 {
			return nil, fmt.Errorf("malformed levels %q", part)
		}
		var n [4]int64
		for i := range n {
			var err error
			if n[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				return nil, fmt.Errorf("malformed levels %q", part)
			}
		}
		out[f[0]] = Level{SKU: f[0], Available: n[0], Reserved: n[1], Sold: n[2], Version: n[3]}
	}
	return out, nil
}

// setAfter gives each movement of a SKU in after its levels after it: the entry's last
// movement of the SKU has the entry's levels, and each earlier one the levels before
// the next (its levels minus the next movement's deltas).
func setAfter(events []Event, after map[string]Level) {
	cur := make(map[string]Level, len(after))
	for sku, lv := range after {
		cur[sku] = lv
	}
	for i := len(events) - 1; i >= 0; i-- {
		ms := events[i].Movements
		for j := len(ms) - 1; j >= 0; j-- {
			m := &ms[j]
			lv, ok := cur[m.SKU]
			if !ok || lv.Version != m.Seq {
				continue // not this entry's levels' chain: leave it without
			}
			m.After, m.HasAfter = lv, true
			cur[m.SKU] = Level{SKU: m.SKU, Available: lv.Available - m.Available, Reserved: lv.Reserved - m.Reserved,
				Sold: lv.Sold - m.Sold, Version: m.Seq - 1}
		}
	}
}

// wireEvent is an outbox event as the scripts write it (scripts/lua/prelude.lua,
// event): format version 2 is "2", then these fields in this order, newline-separated;
// version 1, written before events carried a version, is the same list without it.
// Lines and moves keep their compact forms ("sku:qty:price[:L]" and
// "sku:seq:dA:dR:dS", joined by ","). The layout is positional on the wire because a
// JSON encoding cost Redis a quarter more time per checkout (docs/BENCHMARKS.md); it is
// named here and in prelude.lua, and nowhere else.
type wireEvent struct {
	V                            int
	Kind, ID, User, TS, Currency string
	Lines, Moves, Expires, Hold  string
	SKU, Reason, Actor           string
}

// eventFormat is the version the scripts write now, as its prefix.
const eventFormat = "2\n"

// readWireEvent reads either version. A version it does not know is refused rather than
// guessed at.
func readWireEvent(raw string) (wireEvent, error) {
	v := 1
	if rest, ok := strings.CutPrefix(raw, eventFormat); ok {
		v, raw = 2, rest
	} else if len(raw) > 1 && raw[0] >= '0' && raw[0] <= '9' && raw[1] == '\n' {
		return wireEvent{}, fmt.Errorf("event: format version %c is not known here", raw[0])
	}
	f := strings.Split(raw, "\n")
	if len(f) != 12 {
		return wireEvent{}, fmt.Errorf("event: %d fields, want 12 (version %d)", len(f), v)
	}
	return wireEvent{V: v, Kind: f[0], ID: f[1], User: f[2], TS: f[3], Currency: f[4], Lines: f[5],
		Moves: f[6], Expires: f[7], Hold: f[8], SKU: f[9], Reason: f[10], Actor: f[11]}, nil
}

func decodeEvent(streamID, raw string) (Event, error) {
	bad := func(what string) (Event, error) {
		return Event{}, fmt.Errorf("outbox entry %s: malformed %s", streamID, what)
	}
	w, err := readWireEvent(raw)
	if err != nil {
		return Event{}, fmt.Errorf("outbox entry %s: %w", streamID, err)
	}
	ts, err := strconv.ParseInt(w.TS, 10, 64)
	if err != nil {
		return bad("ts")
	}
	e := Event{
		StreamID: streamID, Kind: w.Kind, ID: w.ID, UserID: w.User, At: time.UnixMilli(ts).UTC(),
		Currency: w.Currency, Lines: w.Lines, HoldID: w.Hold, SKU: w.SKU, Reason: w.Reason, Actor: w.Actor,
	}
	if w.Expires != "" {
		ms, err := strconv.ParseInt(w.Expires, 10, 64)
		if err != nil {
			return bad("expiry")
		}
		e.ExpiresAt = time.UnixMilli(ms).UTC()
	}
	if e.Items, err = parseItems(w.Lines); err != nil {
		return Event{}, fmt.Errorf("outbox entry %s: %w", streamID, err)
	}
	mkind := e.Kind
	switch e.Kind {
	case EventOrder:
		mkind = "sale"
		if e.HoldID != "" {
			mkind = "commit"
		}
	case EventHold:
		mkind = "reserve"
	}
	for part := range strings.SplitSeq(w.Moves, ",") {
		m := strings.Split(part, ":")
		if len(m) != 5 {
			return bad("movement")
		}
		var n [4]int64
		for i := range n {
			if n[i], err = strconv.ParseInt(m[i+1], 10, 64); err != nil {
				return bad("movement")
			}
		}
		e.Movements = append(e.Movements, Movement{SKU: m[0], Seq: n[0], Kind: mkind,
			Available: n[1], Reserved: n[2], Sold: n[3], Ref: e.ID, Reason: e.Reason, At: e.At})
	}
	return e, nil
}
