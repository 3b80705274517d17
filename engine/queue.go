package engine

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/scripts/lua"
)

// MaxAdmitPerMinute bounds a waiting room's admission rate.
const MaxAdmitPerMinute = 1_000_000

// WaitingRoom is a SKU's waiting room: while Enabled, checkouts and holds of the SKU need
// a queue pass, and the room admits at most AdmitPerMinute buyers a minute.
type WaitingRoom struct {
	Enabled        bool  `json:"enabled" bson:"enabled"`
	AdmitPerMinute int64 `json:"admitPerMinute" bson:"admitPerMinute"`
}

func checkRoom(w *WaitingRoom) error {
	if w == nil {
		return nil
	}
	lo := int64(0)
	if w.Enabled {
		lo = 1
	}
	if w.AdmitPerMinute < lo || w.AdmitPerMinute > MaxAdmitPerMinute {
		return invalid("waitingRoom.admitPerMinute", "must be between %d and %d", lo, MaxAdmitPerMinute)
	}
	return nil
}

// roomRate is what the stock hash keeps of a room: its rate, 0 when disabled.
func roomRate(w *WaitingRoom) int64 {
	if w == nil || !w.Enabled {
		return 0
	}
	return w.AdmitPerMinute
}

// QueueStatus is where a buyer stands in a SKU's waiting room.
type QueueStatus string

// Queue states. QueueAbsent is not the contract's: the buyer is not in the queue.
const (
	QueueWaiting  QueueStatus = "waiting"
	QueueAdmitted QueueStatus = "admitted"
	QueueSoldOut  QueueStatus = "sold_out"
	QueueExpired  QueueStatus = "expired"
	QueueAbsent   QueueStatus = "absent"
)

// QueueTicket is a buyer's place in a waiting room, and what the call that read it did
// to the room (for metrics).
type QueueTicket struct {
	SKU    string
	Status QueueStatus
	// Position is 1 for the next buyer to be admitted; 0 unless waiting or sold out.
	Position int64
	// EstimatedWait is the wait for Position at the rate the room really admits.
	EstimatedWait time.Duration
	// Pass and PassExpiresAt are set when Status is QueueAdmitted.
	Pass          string
	PassExpiresAt time.Time
	// Joined is true when this call put the buyer in the queue.
	Joined bool
	// Admitted and Expired count the passes this call issued and saw expire; Waiting is
	// the queue's length after it.
	Admitted, Expired, Waiting int64
}

// admitPerCall bounds the buyers one queue call admits, so that a call stays short
// whatever the admission rate.
const admitPerCall = 1000

var scriptQueue = newScript(lua.Queue)

// JoinQueue puts userID in sku's waiting room, once: joining again keeps the place.
// Before the sale starts the place is random (drawn here from the inventory's source of
// randomness, crypto/rand by default); afterwards it is behind everyone already there.
// Errors: ErrInvalid, ErrNotFound (no such SKU, or its room is disabled),
// ErrUnavailable, ErrOutcomeUnknown.
func (r *Redis) JoinQueue(ctx context.Context, sku, userID string) (QueueTicket, error) {
	if err := checkQueue(sku, userID); err != nil {
		return QueueTicket{}, fmt.Errorf("join queue: %w", err)
	}
	place, err := r.drawPlace()
	if err != nil {
		return QueueTicket{}, fmt.Errorf("join queue: %w", err)
	}
	// Safe to run twice: the place is drawn once here, and ZADD NX keeps the first.
	keys, err := r.roomKeys(ctx, sku)
	if err != nil {
		return QueueTicket{}, fmt.Errorf("join queue %s: %w", sku, err)
	}
	rep, err := run(ctx, r.sc, scriptQueue, keys, "join", userID, place, r.passTTL, admitPerCall, sku)
	if err != nil {
		return QueueTicket{}, fmt.Errorf("join queue %s: %w", sku, err)
	}
	return queueTicket(sku, rep)
}

// QueuePosition reads where userID stands in sku's waiting room (QueueAbsent when not
// in it), admitting whoever the room may admit now.
// Errors: ErrInvalid, ErrNotFound (no such SKU, or its room is disabled), ErrUnavailable.
func (r *Redis) QueuePosition(ctx context.Context, sku, userID string) (QueueTicket, error) {
	if err := checkQueue(sku, userID); err != nil {
		return QueueTicket{}, fmt.Errorf("queue position: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return QueueTicket{}, fmt.Errorf("queue position: %w: %w", ErrUnavailable, err)
	}
	// A poll changes nothing the caller asked for (its admissions would happen on the
	// next call anyway), so a lost reply is "unavailable", as for a read.
	keys, err := r.roomKeys(ctx, sku)
	if err != nil {
		return QueueTicket{}, fmt.Errorf("queue position %s: %w", sku, err)
	}
	v, err := r.plain.Run(ctx, scriptQueue, keys, "poll", userID, 0, r.passTTL, admitPerCall, sku).Slice()
	if err != nil {
		return QueueTicket{}, readErr("queue position "+sku, err)
	}
	return queueTicket(sku, reply(v))
}

func checkQueue(sku, userID string) error {
	if err := checkSKU("sku", sku); err != nil {
		return err
	}
	return checkKey("userId", userID, false)
}

func (r *Redis) roomKeys(ctx context.Context, sku string) ([]string, error) {
	p, err := r.partitionOf(ctx, sku)
	if err != nil {
		return nil, err
	}
	k := p.k
	return []string{k.Stock(sku), k.Room(sku, ""), k.Room(sku, "w"), k.Room(sku, "p"), k.Room(sku, "e")}, nil
}

// drawPlace is a random place in [0, 2^52): exact as a sorted-set score, and below
// every late arrival's place (2^52 + arrival number).
func (r *Redis) drawPlace() (string, error) {
	var b [8]byte
	if _, err := io.ReadFull(r.rand, b[:]); err != nil {
		return "", fmt.Errorf("draw a place: %w", err)
	}
	return strconv.FormatUint(binary.BigEndian.Uint64(b[:])>>12, 10), nil
}

func queueTicket(sku string, rep reply) (QueueTicket, error) {
	switch rep.status() {
	case "not_found":
		return QueueTicket{}, fmt.Errorf("sku %s: %w", sku, ErrNotFound)
	case "no_room":
		return QueueTicket{}, fmt.Errorf("sku %s has no waiting room: %w", sku, ErrNotFound)
	}
	if err := rep.expect("ok"); err != nil {
		return QueueTicket{}, err
	}
	t := QueueTicket{SKU: sku, Status: QueueStatus(rep.str(1)), Position: rep.num(2),
		EstimatedWait: time.Duration(rep.num(3)) * time.Second, Pass: rep.str(4),
		Joined: rep.num(6) == 1, Admitted: rep.num(7), Expired: rep.num(8), Waiting: rep.num(9)}
	if t.Status == QueueAdmitted {
		t.PassExpiresAt = time.UnixMilli(rep.num(5)).UTC()
	}
	return t, nil
}

// ValidQueuePass says whether s has the form of a Queue-Pass header: one pass (40 hex
// digits) or, for a request with lines of several rooms, up to MaxLines of them joined
// by commas. Only the script can tell whether a pass is valid.
func ValidQueuePass(s string) bool {
	if s == "" || len(s) > MaxLines*41 {
		return false
	}
	for p := range strings.SplitSeq(s, ",") {
		p = strings.TrimSpace(p)
		if len(p) != 40 {
			return false
		}
		if _, err := hex.DecodeString(p); err != nil {
			return false
		}
	}
	return true
}

// normalizePass joins a Queue-Pass header's passes with bare commas, in lower case;
// anything that is not of ValidQueuePass's form carries no pass.
func normalizePass(s string) string {
	if !ValidQueuePass(s) {
		return ""
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = strings.ToLower(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

// newRoomSecret draws the secret a room's passes are derived from.
func newRoomSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// QueueLengths reads how many buyers wait in each SKU's room, in one round trip.
func (r *Redis) QueueLengths(ctx context.Context, skus []string) (map[string]int64, error) {
	parts, err := r.partitionsOf(ctx, skus)
	if err != nil {
		return nil, fmt.Errorf("queue lengths: %w", err)
	}
	cmds := make([]*redis.IntCmd, len(skus))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sku := range skus {
			cmds[i] = p.ZCard(ctx, parts[i].k.Room(sku, "w"))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("queue lengths: %w", readErr("read", err))
	}
	out := make(map[string]int64, len(skus))
	for i, c := range cmds {
		if n := c.Val(); n > 0 {
			out[skus[i]] = n
		}
	}
	return out, nil
}
