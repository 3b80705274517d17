package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/scripts/lua"
)

// Options tune a Redis inventory. The zero value is usable.
type Options struct {
	// Partition is the hash tag every key carries (default "0").
	Partition string
	// IdempotencyTTL is how long idempotency keys are remembered (default 25h).
	IdempotencyTTL time.Duration
	// RecordTTL is how long orders and holds stay readable in Redis (default 7 days):
	// holds from when they are placed, orders from when the syncer has persisted them
	// (see RetireOrders). MongoDB keeps them for good.
	RecordTTL time.Duration
	// Batchers is how many checkout/reserve batches may be in flight at once
	// (default 4). See batcher.
	Batchers int
	// SoldOutFor, if positive, lets this process refuse a SKU it has seen sold out for
	// that long without asking Redis, unless stock comes back first (see soldOut).
	// 0, the default, keeps every answer live.
	SoldOutFor time.Duration
}

// Redis is the Inventory on Redis: each operation is one Lua script, so every check and
// its write happen in one atomic step, and the same script appends the outbox entry.
type Redis struct {
	rdb     redis.UniversalClient
	k       keys
	idemTTL string // seconds, as the scripts take it
	recTTL  string
	batch   *batcher
	// soldOut is nil unless Options.SoldOutFor is set.
	soldOut *soldOut
}

var _ Inventory = (*Redis)(nil)

var (
	scriptTake   = redis.NewScript(lua.Take)
	scriptSettle = redis.NewScript(lua.Settle)
	scriptCancel = redis.NewScript(lua.Cancel)
	scriptCreate = redis.NewScript(lua.Create)
	scriptUpdate = redis.NewScript(lua.Update)
	scriptAdjust = redis.NewScript(lua.Adjust)
	allScripts   = []*redis.Script{scriptTake, scriptSettle, scriptCancel, scriptCreate, scriptUpdate, scriptAdjust}
)

// NewRedis returns an Inventory on rdb, which may be a client, a cluster client or a ring.
// rdb must not retry commands on its own (build its options with NoRetries); NewRedis
// panics if it would.
func NewRedis(rdb redis.UniversalClient, opts Options) *Redis {
	checkNoRetries(rdb)
	if opts.Partition == "" {
		opts.Partition = "0"
	}
	if opts.IdempotencyTTL <= 0 {
		opts.IdempotencyTTL = 25 * time.Hour
	}
	if opts.RecordTTL <= 0 {
		opts.RecordTTL = 7 * 24 * time.Hour
	}
	// A replayed key must still find its record.
	opts.RecordTTL = max(opts.RecordTTL, opts.IdempotencyTTL)
	if opts.Batchers <= 0 {
		opts.Batchers = 4
	}
	r := &Redis{
		rdb:     rdb,
		k:       newKeys(opts.Partition),
		idemTTL: strconv.FormatInt(int64(opts.IdempotencyTTL/time.Second), 10),
		recTTL:  strconv.FormatInt(int64(opts.RecordTTL/time.Second), 10),
	}
	r.batch = newBatcher(r, opts.Batchers)
	if opts.SoldOutFor > 0 {
		r.soldOut = newSoldOut(context.Background(), rdb, r.k.restockChannel(), opts.SoldOutFor)
	}
	return r
}

// Close stops the checkout batchers after they have served what is queued, and the
// sold-out listener. It does not close the Redis client.
func (r *Redis) Close() {
	r.batch.close()
	if r.soldOut != nil {
		r.soldOut.close()
	}
}

// LoadScripts makes sure every script is in Redis's script cache: one SCRIPT EXISTS,
// and SCRIPT LOAD only for those missing (a restarted Redis has an empty cache).
// Scripts also load themselves on first use (EVALSHA falls back to EVAL on NOSCRIPT);
// this is for readiness checks.
func (r *Redis) LoadScripts(ctx context.Context) error {
	hashes := make([]string, len(allScripts))
	for i, s := range allScripts {
		hashes[i] = s.Hash()
	}
	exists, err := r.rdb.ScriptExists(ctx, hashes...).Result()
	if err != nil {
		return readErr("load scripts", err)
	}
	for i, s := range allScripts {
		if exists[i] {
			continue
		}
		if err := s.Load(ctx, r.rdb).Err(); err != nil {
			return readErr("load scripts", err)
		}
	}
	return nil
}

// OutboxKey is the stream every movement is appended to.
func (r *Redis) OutboxKey() string { return r.k.outbox() }

// RetireOrders gives order records their TTL (RecordTTL) once MongoDB has them: a
// checkout writes its record without one, so that it (and the idempotency key it
// carries) cannot expire before the order is durable. The syncer calls it.
func (r *Redis) RetireOrders(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	ttl, _ := strconv.ParseInt(r.recTTL, 10, 64)
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.Expire(ctx, r.k.order(id), time.Duration(ttl)*time.Second)
		}
		return nil
	})
	return readErr("retire orders", err)
}

// DeadLetterKey is the stream where the syncer parks outbox entries it cannot decode.
func (r *Redis) DeadLetterKey() string { return r.k.outbox() + ":dead" }

// Client is the Redis client the inventory runs on.
func (r *Redis) Client() redis.UniversalClient { return r.rdb }

// CreateProduct implements Inventory.
func (r *Redis) CreateProduct(ctx context.Context, p Product) (Level, error) {
	if err := checkProduct(p); err != nil {
		return Level{}, fmt.Errorf("create product: %w", err)
	}
	lv := Level{SKU: p.SKU, Available: p.Stock, Version: 1}
	if err := r.put(ctx, "create", p, lv); err != nil {
		return Level{}, fmt.Errorf("create product %s: %w", p.SKU, err)
	}
	return lv, nil
}

// Restore writes a SKU's stock record rebuilt from the durable ledger, unless Redis has
// one already; it reports whether it wrote. Nothing goes to the outbox: the movements
// that explain the levels are in the ledger already.
func (r *Redis) Restore(ctx context.Context, p Product, lv Level) (bool, error) {
	if err := checkProduct(p); err != nil {
		return false, fmt.Errorf("restore %s: %w", p.SKU, err)
	}
	err := r.put(ctx, "restore", p, lv)
	if errors.Is(err, ErrAlreadyExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("restore %s: %w", p.SKU, err)
	}
	return true, nil
}

func (r *Redis) put(ctx context.Context, mode string, p Product, lv Level) error {
	reply, err := run(ctx, r.rdb, scriptCreate,
		[]string{r.k.outbox(), r.k.stock(p.SKU), r.k.skus()},
		mode, p.SKU, lv.Available, lv.Reserved, lv.Sold, lv.Version,
		p.Price, p.Currency, p.MaxPerUser, unixMs(p.SaleStartsAt), unixMs(p.SaleEndsAt), NewID())
	if err != nil {
		return err
	}
	switch reply.status() {
	case "exists":
		return ErrAlreadyExists
	case "replay":
		return nil
	}
	if err := reply.expect("ok"); err != nil {
		return err
	}
	if lv.Available > 0 {
		r.restocked(p.SKU)
	}
	return nil
}

func checkProduct(p Product) error {
	if err := checkSKU("sku", p.SKU); err != nil {
		return err
	}
	switch {
	case p.Stock < 0 || p.Stock > MaxUnits:
		return invalid("stock", "must be between 0 and %d", MaxUnits)
	case p.Price < 0 || p.Price > MaxPrice:
		return invalid("price", "must be between 0 and %d", MaxPrice)
	case !validCurrency(p.Currency):
		return invalid("currency", "must be an ISO 4217 code such as USD")
	case p.MaxPerUser < 0 || p.MaxPerUser > MaxUnits:
		return invalid("maxPerUser", "must be between 0 and %d", MaxUnits)
	case p.SaleStartsAt != nil && p.SaleEndsAt != nil && !p.SaleEndsAt.After(*p.SaleStartsAt):
		return invalid("saleEndsAt", "must be after saleStartsAt")
	}
	return nil
}

func validCurrency(c string) bool {
	return len(c) == 3 && strings.ToUpper(c) == c && validToken(c, 3)
}

// UpdateProduct implements Inventory.
func (r *Redis) UpdateProduct(ctx context.Context, sku string, patch ProductPatch) error {
	if err := checkSKU("sku", sku); err != nil {
		return fmt.Errorf("update product: %w", err)
	}
	var args []any
	if patch.Price != nil {
		if *patch.Price < 0 || *patch.Price > MaxPrice {
			return fmt.Errorf("update product: %w", invalid("price", "must be between 0 and %d", MaxPrice))
		}
		args = append(args, "p", *patch.Price)
	}
	if patch.Currency != nil {
		if !validCurrency(*patch.Currency) {
			return fmt.Errorf("update product: %w", invalid("currency", "must be an ISO 4217 code such as USD"))
		}
		args = append(args, "c", *patch.Currency)
	}
	if patch.MaxPerUser != nil {
		if *patch.MaxPerUser < 0 || *patch.MaxPerUser > MaxUnits {
			return fmt.Errorf("update product: %w", invalid("maxPerUser", "must be between 0 and %d", MaxUnits))
		}
		args = append(args, "l", *patch.MaxPerUser)
	}
	if patch.SaleStartsAt != nil {
		args = append(args, "ss", unixMs(patch.SaleStartsAt))
	}
	if patch.SaleEndsAt != nil {
		args = append(args, "se", unixMs(patch.SaleEndsAt))
	}
	if len(args) == 0 {
		return nil
	}
	reply, err := run(ctx, r.rdb, scriptUpdate, []string{r.k.stock(sku)}, args...)
	if err == nil && reply.status() == "not_found" {
		err = ErrNotFound
	} else if err == nil {
		err = reply.expect("ok")
	}
	if err != nil {
		return fmt.Errorf("update product %s: %w", sku, err)
	}
	return nil
}

// Checkout implements Inventory.
func (r *Redis) Checkout(ctx context.Context, req CheckoutRequest) (Order, error) {
	lines, err := checkTake(req.UserID, req.Lines, req.IdempotencyKey, req.OrderID)
	if err != nil {
		return Order{}, fmt.Errorf("checkout: %w", err)
	}
	id, fp := req.OrderID, ""
	if req.IdempotencyKey != "" {
		id, fp = recordID("order", req.UserID, req.IdempotencyKey), linesFingerprint("checkout", lines)
	}
	reply, err := r.take(&takeReq{ctx: ctx, mode: "order", user: req.UserID, id: id, fp: fp, lines: lines,
		rateKey: r.rateKey(req.UserID, req.RatePerMinute), rateLimit: req.RatePerMinute})
	if err != nil {
		return Order{}, opError("checkout", err)
	}
	if reply.status() == "replay" {
		o, err := r.Order(ctx, reply.str(1))
		if err != nil {
			return Order{}, fmt.Errorf("checkout: replay: %w", err)
		}
		o.Replayed = true
		return o, nil
	}
	items, err := parseItems(reply.str(3))
	if err != nil {
		return Order{}, fmt.Errorf("checkout: %w", err)
	}
	return newOrder(id, req.UserID, OrderConfirmed, reply.str(2), items, reply.num(1), ""), nil
}

// Reserve implements Inventory.
func (r *Redis) Reserve(ctx context.Context, req ReserveRequest) (Hold, error) {
	lines, err := checkTake(req.UserID, req.Lines, req.IdempotencyKey, req.HoldID)
	if err == nil && (req.TTL < time.Millisecond || req.TTL > time.Hour) {
		err = invalid("ttlSeconds", "must be between 1ms and 1h")
	}
	if err != nil {
		return Hold{}, fmt.Errorf("reserve: %w", err)
	}
	ttlMs := req.TTL.Milliseconds()
	id, fp := req.HoldID, ""
	if req.IdempotencyKey != "" {
		id, fp = recordID("hold", req.UserID, req.IdempotencyKey), linesFingerprint("reserve", lines, strconv.FormatInt(ttlMs, 10))
	}
	reply, err := r.take(&takeReq{ctx: ctx, mode: "hold", user: req.UserID, id: id, fp: fp, holdMs: ttlMs, lines: lines,
		rateKey: r.rateKey(req.UserID, req.RatePerMinute), rateLimit: req.RatePerMinute})
	if err != nil {
		return Hold{}, opError("reserve", err)
	}
	if reply.status() == "replay" {
		h, err := r.Hold(ctx, reply.str(1))
		if err != nil {
			return Hold{}, fmt.Errorf("reserve: replay: %w", err)
		}
		h.Replayed = true
		return h, nil
	}
	items, err := parseItems(reply.str(3))
	if err != nil {
		return Hold{}, fmt.Errorf("reserve: %w", err)
	}
	return Hold{
		ID: id, UserID: req.UserID, Items: items, Currency: reply.str(2), Status: HoldActive,
		CreatedAt: time.UnixMilli(reply.num(1)).UTC(), ExpiresAt: time.UnixMilli(reply.num(4)).UTC(),
	}, nil
}

func checkTake(user string, lines []Line, idemKey, id string) ([]Line, error) {
	if err := checkKey("userId", user, false); err != nil {
		return nil, err
	}
	if err := checkKey("idempotencyKey", idemKey, true); err != nil {
		return nil, err
	}
	if idemKey == "" || id != "" {
		if err := checkID("id", id); err != nil {
			return nil, err
		}
	}
	return normalize(lines)
}

// RateLimit caps a user's checkouts, reservations and commits per minute, counted
// together in Redis inside the operation's own script. PerMinute 0 means no limit.
type RateLimit struct {
	User      string
	PerMinute int
}

// newRateError is the refusal of a request over the rate limit; waitMs is what the
// script computed on Redis's clock.
func newRateError(waitMs int64) *RateError {
	return &RateError{RetryAfter: max(1, (waitMs+999)/1000)}
}

// RateLimitKey is the counter of a user's rate-limited requests: checkouts and
// reservations (RatePerMinute) and commits (CommitHold) all count in it, inside their
// script, over a window that slides on Redis's clock.
func (r *Redis) RateLimitKey(user string) string {
	return r.k.prefix + "rl:" + user
}

func (r *Redis) rateKey(user string, limit int) string {
	if limit <= 0 {
		return ""
	}
	return r.RateLimitKey(user)
}

// opError names the operation in err, except for a stock refusal: it already says
// what happened, and a sold-out storm returns it so often that formatting it twice
// would be most of the refusal's cost.
func opError(op string, err error) error {
	switch err.(type) {
	case *StockError, *RateError:
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}

// take runs one request through the batcher; it answers 'ok' or 'replay' or an error.
func (r *Redis) take(req *takeReq) (reply, error) {
	// A request with an idempotency key may be the retry of one that succeeded, whose
	// answer must be replayed even if the SKU is sold out now: only Redis knows.
	if r.soldOut != nil && req.fp == "" {
		if err := r.soldOut.refuse(req.lines); err != nil {
			return nil, err
		}
	}
	rep, err := r.batch.submit(req)
	if err != nil {
		return nil, err
	}
	if err := takeError(rep); err != nil {
		if r.soldOut != nil {
			r.soldOut.mark(err)
		}
		return nil, err
	}
	return rep, nil
}

// Order implements Inventory.
func (r *Redis) Order(ctx context.Context, id string) (Order, error) {
	if err := checkID("id", id); err != nil {
		return Order{}, fmt.Errorf("order: %w", err)
	}
	v, err := r.rdb.Get(ctx, r.k.order(id)).Result()
	if errors.Is(err, redis.Nil) {
		return Order{}, fmt.Errorf("order %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Order{}, fmt.Errorf("order %s: %w", id, readErr("read", err))
	}
	return parseOrder(id, v)
}

func newOrder(id, user string, status OrderStatus, currency string, items []Item, tsMs int64, holdID string) Order {
	var total int64
	for _, it := range items {
		total += it.UnitPrice * it.Quantity
	}
	return Order{ID: id, UserID: user, Items: items, Total: total, Currency: currency, Status: status,
		CreatedAt: time.UnixMilli(tsMs).UTC(), HoldID: holdID}
}

// Cancel implements Inventory.
func (r *Redis) Cancel(ctx context.Context, orderID string) (Order, error) {
	o, err := r.Order(ctx, orderID)
	if err != nil {
		return Order{}, fmt.Errorf("cancel: %w", err)
	}
	return r.CancelOrder(ctx, o)
}

// CancelOrder cancels an order the caller has just read with Order (for example to
// check its owner), saving the second read Cancel would make. Errors as Cancel.
func (r *Redis) CancelOrder(ctx context.Context, o Order) (Order, error) {
	if o.lines == "" {
		return r.Cancel(ctx, o.ID) // not read through Order: read it
	}
	keys := []string{r.k.outbox(), r.k.order(o.ID)}
	for _, it := range o.Items {
		keys = append(keys, r.k.stock(it.SKU), r.k.bought(it.SKU))
	}
	rep, err := run(ctx, r.rdb, scriptCancel, keys, o.ID, o.lines)
	if err == nil {
		switch rep.status() {
		case "ok":
			o.Status = OrderCancelled
			r.restocked(itemSKUs(o.Items)...)
			return o, nil
		case "replay":
			o.Status, o.Replayed = OrderCancelled, true
			return o, nil
		case "not_found":
			err = ErrNotFound
		default:
			err = rep.expect("ok")
		}
	}
	return Order{}, fmt.Errorf("cancel %s: %w", o.ID, err)
}

// Hold implements Inventory.
func (r *Redis) Hold(ctx context.Context, id string) (Hold, error) {
	if err := checkID("id", id); err != nil {
		return Hold{}, fmt.Errorf("hold: %w", err)
	}
	v, err := r.rdb.HMGet(ctx, r.k.hold(id), "u", "st", "ts", "x", "c", "l", "o").Result()
	if err != nil {
		return Hold{}, fmt.Errorf("hold %s: %w", id, readErr("read", err))
	}
	if v[0] == nil {
		return Hold{}, fmt.Errorf("hold %s: %w", id, ErrNotFound)
	}
	items, err := parseItems(asString(v[5]))
	if err != nil {
		return Hold{}, fmt.Errorf("hold %s: %w", id, err)
	}
	ts, _ := strconv.ParseInt(asString(v[2]), 10, 64)
	exp, _ := strconv.ParseInt(asString(v[3]), 10, 64)
	return Hold{ID: id, UserID: asString(v[0]), Items: items, Currency: asString(v[4]),
		Status: HoldStatus(asString(v[1])), CreatedAt: time.UnixMilli(ts).UTC(),
		ExpiresAt: time.UnixMilli(exp).UTC(), OrderID: asString(v[6]), lines: asString(v[5])}, nil
}

// Commit implements Inventory.
func (r *Redis) Commit(ctx context.Context, holdID, orderID string) (Order, error) {
	h, err := r.Hold(ctx, holdID)
	if err != nil {
		return Order{}, fmt.Errorf("commit: %w", err)
	}
	return r.CommitHold(ctx, h, orderID, RateLimit{})
}

// CommitHold commits a hold the caller has just read with Hold (for example to check
// its owner), saving the second read Commit would make. Errors as Commit.
func (r *Redis) CommitHold(ctx context.Context, h Hold, orderID string, limit RateLimit) (Order, error) {
	if err := checkID("orderId", orderID); err != nil {
		return Order{}, fmt.Errorf("commit: %w", err)
	}
	h, rep, err := r.settle(ctx, "commit", h, orderID, limit)
	if err != nil {
		return Order{}, opError("commit", err)
	}
	if rep.status() == "replay" {
		o, err := r.Order(ctx, rep.str(2))
		if err != nil {
			return Order{}, fmt.Errorf("commit %s: replay: %w", h.ID, err)
		}
		o.Replayed = true
		return o, nil
	}
	return newOrder(orderID, h.UserID, OrderConfirmed, h.Currency, h.Items, rep.num(2), h.ID), nil
}

// Release implements Inventory.
func (r *Redis) Release(ctx context.Context, holdID string) (Hold, error) {
	h, err := r.Hold(ctx, holdID)
	if err != nil {
		return Hold{}, fmt.Errorf("release: %w", err)
	}
	return r.ReleaseHold(ctx, h)
}

// ReleaseHold releases a hold the caller has just read with Hold. Errors as Release.
func (r *Redis) ReleaseHold(ctx context.Context, h Hold) (Hold, error) {
	h, rep, err := r.settle(ctx, "release", h, "", RateLimit{})
	if err != nil {
		return Hold{}, fmt.Errorf("release %s: %w", h.ID, err)
	}
	h.Status, h.Replayed = HoldReleased, rep.status() == "replay"
	return h, nil
}

// settle runs settle.lua on a hold, reading it first unless it came from Hold; it
// returns the hold it acted on and 'ok' or 'replay', or an error.
func (r *Redis) settle(ctx context.Context, mode string, h Hold, orderID string, limit RateLimit) (Hold, reply, error) {
	if h.lines == "" { // not read through Hold: read it
		var err error
		if h, err = r.Hold(ctx, h.ID); err != nil {
			return Hold{}, nil, err
		}
	}
	rep, err := runResult{r.runSettle(ctx, r.rdb, mode, h, orderID, limit)}.result()
	if err != nil {
		return Hold{}, nil, err
	}
	switch rep.status() {
	case "ok", "replay":
		if mode != "commit" && rep.status() == "ok" {
			r.restocked(itemSKUs(h.Items)...)
		}
		return h, rep, nil
	case "not_found":
		return Hold{}, nil, ErrNotFound
	case "expired":
		return Hold{}, nil, ErrHoldExpired
	case "released":
		return Hold{}, nil, ErrHoldReleased
	case "committed":
		return Hold{}, nil, ErrHoldCommitted
	case "rate_limited":
		return Hold{}, nil, newRateError(rep.num(1))
	}
	return Hold{}, nil, rep.expect("ok")
}

func (r *Redis) runSettle(ctx context.Context, s redis.Scripter, mode string, h Hold, orderID string, limit RateLimit) *redis.Cmd {
	record := r.k.hold(h.ID)
	if orderID != "" {
		record = r.k.order(orderID)
	}
	keys := make([]string, 4, 5+2*len(h.Items))
	keys[0], keys[1], keys[2], keys[3] = r.k.outbox(), r.k.hold(h.ID), r.k.holdIndex(), record
	for _, it := range h.Items {
		keys = append(keys, r.k.stock(it.SKU), r.k.bought(it.SKU))
	}
	if limit.PerMinute > 0 {
		keys = append(keys, r.RateLimitKey(limit.User))
	}
	return scriptSettle.Run(ctx, s, keys, mode, h.ID, h.lines, orderID, max(limit.PerMinute, 0))
}

// ExpireHolds implements Inventory. It reads one batch of due holds and settles them in
// two pipelined round trips; a hold that is no longer due or active is left alone.
func (r *Redis) ExpireHolds(ctx context.Context, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	ids, err := r.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: r.k.holdIndex(), ByScore: true, Start: "-inf", Stop: strconv.FormatInt(time.Now().UnixMilli(), 10),
		Count: int64(limit),
	}).Result()
	if err != nil || len(ids) == 0 {
		return 0, readErr("expire holds", err)
	}
	holds := make([]Hold, 0, len(ids))
	var bad []string
	for _, id := range ids {
		h, err := r.Hold(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			r.rdb.ZRem(ctx, r.k.holdIndex(), id)
			continue
		case errors.Is(err, ErrUnavailable):
			return 0, fmt.Errorf("expire holds: %w", err)
		case err != nil:
			// A record this code cannot read must not stop every later sweep: it leaves
			// the index for a quarantine set an operator can inspect, and the sweep goes on.
			bad = append(bad, id)
			continue
		}
		holds = append(holds, h)
	}
	var quarantined error
	if len(bad) > 0 {
		quarantined = r.quarantineHolds(ctx, bad)
	}
	// Make sure EVALSHA finds the script: a pipeline cannot fall back to EVAL.
	if err := scriptSettle.Load(ctx, r.rdb).Err(); err != nil {
		return 0, readErr("expire holds", err)
	}
	cmds := make([]*redis.Cmd, len(holds))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, h := range holds {
			cmds[i] = r.runSettle(ctx, p, "expire", h, "", RateLimit{})
		}
		return nil
	})
	if err != nil {
		return 0, readErr("expire holds", err)
	}
	n := 0
	var back []string
	for i, c := range cmds {
		if rep, err := (runResult{c}).result(); err == nil && rep.status() == "ok" {
			n++
			back = append(back, itemSKUs(holds[i].Items)...)
		}
	}
	r.restocked(back...)
	return n, quarantined
}

// QuarantineError reports holds the expiry sweep could not read. They were moved from
// the expiry index to the set HoldQuarantineKey names (scored by when), and
// their units stay reserved until an operator settles them (reconciliation reports the
// difference meanwhile).
type QuarantineError struct {
	HoldIDs []string
}

func (e *QuarantineError) Error() string {
	return fmt.Sprintf("expire holds: %d unreadable hold(s) quarantined: %s", len(e.HoldIDs), strings.Join(e.HoldIDs, ", "))
}

// HoldQuarantineKey is the sorted set of holds the expiry sweep could not read.
func (r *Redis) HoldQuarantineKey() string { return r.k.holdQuarantine() }

func (r *Redis) quarantineHolds(ctx context.Context, ids []string) error {
	_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.ZAdd(ctx, r.k.holdQuarantine(), redis.Z{Member: id, Score: float64(time.Now().UnixMilli())})
			p.ZRem(ctx, r.k.holdIndex(), id)
		}
		return nil
	})
	if err != nil {
		return readErr("quarantine holds", err)
	}
	return &QuarantineError{HoldIDs: ids}
}

// Adjust implements Inventory.
func (r *Redis) Adjust(ctx context.Context, req AdjustRequest) (Level, error) {
	if err := checkAdmin(req.SKU, req.Reason, req.Actor, req.IdempotencyKey); err != nil {
		return Level{}, fmt.Errorf("adjust: %w", err)
	}
	if req.Delta == 0 || req.Delta < -MaxUnits || req.Delta > MaxUnits {
		return Level{}, fmt.Errorf("adjust: %w", invalid("delta", "must be a non-zero number between %d and %d", -MaxUnits, MaxUnits))
	}
	op := adminOp{kind: "adjust", sku: req.SKU, reason: req.Reason, actor: req.Actor, expected: -1, da: req.Delta}
	if req.IdempotencyKey != "" {
		op.idemKey = req.IdempotencyKey
		op.fp = fingerprint("adjust", req.SKU, strconv.FormatInt(req.Delta, 10), req.Reason)
	}
	lv, err := r.adjust(ctx, op)
	if err != nil {
		return Level{}, fmt.Errorf("adjust %s: %w", req.SKU, err)
	}
	return lv, nil
}

// SetLevel implements Inventory.
func (r *Redis) SetLevel(ctx context.Context, req SetRequest) (Level, error) {
	if err := checkAdmin(req.SKU, req.Reason, req.Actor, ""); err != nil {
		return Level{}, fmt.Errorf("set level: %w", err)
	}
	if req.Available < 0 || req.Available > MaxUnits {
		return Level{}, fmt.Errorf("set level: %w", invalid("available", "must be between 0 and %d", MaxUnits))
	}
	if req.ExpectedVersion < 0 {
		return Level{}, fmt.Errorf("set level: %w", invalid("expectedVersion", "must not be negative"))
	}
	lv, err := r.adjust(ctx, adminOp{kind: "set", sku: req.SKU, reason: req.Reason, actor: req.Actor,
		expected: req.ExpectedVersion, da: req.Available})
	if err != nil {
		return Level{}, fmt.Errorf("set level %s: %w", req.SKU, err)
	}
	return lv, nil
}

// Repair compensates drift found by reconciliation: the levels move by the given deltas
// (expected minus live), and the ledger records both the drift and the compensation
// (two movements, so the version grows by two). It acts only if the SKU's version is
// still expectedVersion, so it cannot act on levels it did not see.
// Errors: ErrInvalid, ErrNotFound, ErrVersionConflict, ErrInsufficientStock.
func (r *Redis) Repair(ctx context.Context, sku string, expectedVersion, dAvailable, dReserved, dSold int64, reason string) (Level, error) {
	return r.fix(ctx, adminOp{kind: "repair", sku: sku, reason: reason, expected: expectedVersion,
		da: dAvailable, dr: dReserved, ds: dSold})
}

// ReleaseLostHolds returns a restored SKU's reserved units to available after a rebuild:
// the holds that reserved them were lost with Redis's data and can never be settled.
// It records one movement of kind rebuild, under compare-and-set on expectedVersion.
func (r *Redis) ReleaseLostHolds(ctx context.Context, sku string, expectedVersion, reserved int64) (Level, error) {
	return r.fix(ctx, adminOp{kind: "rebuild", sku: sku, reason: "holds lost with Redis data",
		expected: expectedVersion, da: reserved, dr: -reserved})
}

func (r *Redis) fix(ctx context.Context, op adminOp) (Level, error) {
	op.actor = "reconcile"
	if err := checkAdmin(op.sku, op.reason, op.actor, ""); err != nil {
		return Level{}, fmt.Errorf("%s: %w", op.kind, err)
	}
	lv, err := r.adjust(ctx, op)
	if err != nil {
		return Level{}, fmt.Errorf("%s %s: %w", op.kind, op.sku, err)
	}
	return lv, nil
}

func checkAdmin(sku, reason, actor, idemKey string) error {
	if err := checkSKU("sku", sku); err != nil {
		return err
	}
	if len(reason) > MaxReasonBytes || !utf8.ValidString(reason) || strings.ContainsFunc(reason, unicode.IsControl) {
		return invalid("reason", "must be at most %d bytes of text without control characters", MaxReasonBytes)
	}
	if err := checkKey("actor", actor, true); err != nil {
		return err
	}
	return checkKey("idempotencyKey", idemKey, true)
}

// adminOp is one run of adjust.lua: an adjustment, a compare-and-set of the level, a
// repair or the release of lost holds.
type adminOp struct {
	kind, sku, reason, actor string
	// idemKey and fp: the caller's idempotency key and the request's fingerprint; without
	// a key, adjust draws an operation id, so that the call is safe to run twice.
	idemKey, fp string
	expected    int64 // version the SKU must be at; -1 = any
	da, dr, ds  int64 // deltas of available, reserved, sold (set: da is the new level)
}

func (r *Redis) adjust(ctx context.Context, op adminOp) (Level, error) {
	record := r.k.idem("admin:"+op.actor, op.idemKey)
	if op.idemKey == "" {
		record, op.fp = r.k.idem("admin-op:"+op.actor, NewID()), "op"
	}
	rep, err := run(ctx, r.rdb, scriptAdjust, []string{r.k.outbox(), r.k.stock(op.sku), record},
		op.kind, op.sku, op.reason, op.actor, op.fp, r.idemTTL, op.expected, op.da, op.dr, op.ds, MaxUnits)
	if err != nil {
		return Level{}, err
	}
	lv := Level{SKU: op.sku, Available: rep.num(1), Reserved: rep.num(2), Sold: rep.num(3), Version: rep.num(4)}
	switch rep.status() {
	case "ok", "replay":
		lv.Replayed = rep.status() == "replay"
		if lv.Available > 0 && !lv.Replayed {
			r.restocked(op.sku)
		}
		return lv, nil
	case "not_found":
		return Level{}, ErrNotFound
	case "reused":
		return Level{}, ErrIdempotencyKeyReused
	case "version":
		return Level{}, fmt.Errorf("%w: version is %d", ErrVersionConflict, lv.Version)
	case "insufficient":
		return Level{}, fmt.Errorf("%w: %d available", ErrInsufficientStock, lv.Available)
	case "too_large":
		return Level{}, invalid("delta", "would take available above %d (it is %d)", MaxUnits, lv.Available)
	}
	return Level{}, rep.expect("ok")
}

// Levels implements Inventory.
func (r *Redis) Levels(ctx context.Context, skus []string) ([]Level, error) {
	found, err := r.Lookup(ctx, skus)
	if err != nil {
		return nil, fmt.Errorf("levels: %w", err)
	}
	out := make([]Level, len(skus))
	for i, sku := range skus {
		lv, ok := found[sku]
		if !ok {
			return nil, fmt.Errorf("levels: sku %s: %w", sku, ErrNotFound)
		}
		out[i] = lv
	}
	return out, nil
}

// Lookup reads the levels of many SKUs in one round trip; SKUs without a stock record
// are absent from the map. Errors: ErrInvalid.
func (r *Redis) Lookup(ctx context.Context, skus []string) (map[string]Level, error) {
	for i, sku := range skus {
		if err := checkSKU("skus["+strconv.Itoa(i)+"]", sku); err != nil {
			return nil, err
		}
	}
	cmds := make([]*redis.SliceCmd, len(skus))
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sku := range skus {
			cmds[i] = p.HMGet(ctx, r.k.stock(sku), "a", "r", "s", "q")
		}
		return nil
	})
	if err != nil {
		return nil, readErr("read", err)
	}
	out := make(map[string]Level, len(skus))
	for i, c := range cmds {
		if v := c.Val(); v[0] != nil {
			out[skus[i]] = Level{SKU: skus[i], Available: asInt(v[0]), Reserved: asInt(v[1]), Sold: asInt(v[2]), Version: asInt(v[3])}
		}
	}
	return out, nil
}

// SKUs implements Inventory.
func (r *Redis) SKUs(ctx context.Context) ([]string, error) {
	skus, err := r.rdb.SMembers(ctx, r.k.skus()).Result()
	if err != nil {
		return nil, readErr("skus", err)
	}
	return skus, nil
}

func unixMs(t *time.Time) int64 {
	if t == nil || t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Price is what a unit of a SKU costs now.
type Price struct {
	Amount   int64
	Currency string
}

// Prices reads the current prices of many SKUs in one round trip; unknown SKUs are
// left out of the map.
func (r *Redis) Prices(ctx context.Context, skus []string) (map[string]Price, error) {
	cmds := make([]*redis.SliceCmd, len(skus))
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sku := range skus {
			cmds[i] = p.HMGet(ctx, r.k.stock(sku), "p", "c")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prices: %w", readErr("read", err))
	}
	out := make(map[string]Price, len(skus))
	for i, c := range cmds {
		if v := c.Val(); v[0] != nil {
			out[skus[i]] = Price{Amount: asInt(v[0]), Currency: asString(v[1])}
		}
	}
	return out, nil
}

// OrderIDForKey is the id of the order a checkout with this user's idempotency key
// creates (see CheckoutRequest).
func OrderIDForKey(userID, key string) string { return recordID("order", userID, key) }

// ActiveHolds counts holds not yet committed, released or expired by the sweep.
func (r *Redis) ActiveHolds(ctx context.Context) (int64, error) {
	n, err := r.rdb.ZCard(ctx, r.k.holdIndex()).Result()
	return n, readErr("active holds", err)
}

// AvailableAll reads every SKU's available units.
func (r *Redis) AvailableAll(ctx context.Context) (map[string]int64, error) {
	skus, err := r.SKUs(ctx)
	if err != nil || len(skus) == 0 {
		return map[string]int64{}, err
	}
	found, err := r.Lookup(ctx, skus)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(found))
	for sku, lv := range found {
		out[sku] = lv.Available
	}
	return out, nil
}
