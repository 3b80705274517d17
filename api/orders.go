package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
)

type itemsInput struct {
	Items *[]engine.Line `json:"items"`
}

// placeOrder is the one checkout path: real requests and the flash-sale simulation's
// synthetic buyers both go through it.
// rate is the user's requests-per-minute limit, counted in the checkout's own script
// (0 for none, as for the simulation's synthetic buyers).
// inv is the server's inventory, or the simulation's lane of it.
// pass is the caller's Queue-Pass header (” for none).
func placeOrder(ctx context.Context, inv *engine.Redis, user string, lines []engine.Line, key string, rate int, cart bool, pass string) (engine.Order, error) {
	req := engine.CheckoutRequest{UserID: user, Lines: lines, IdempotencyKey: key, RatePerMinute: rate, Cart: cart, QueuePass: pass}
	if key == "" { // with a key, the key names the order
		req.OrderID = engine.NewID()
	}
	return inv.Checkout(ctx, req)
}

// decodeItems reads an optional {"items":[…]} body: the plain form the fast parser
// takes, anything else through the strict decoder.
func decodeItems(body []byte) (in itemsInput, present bool, err error) {
	if lines, ok, plain := parseItems(body); plain {
		if ok {
			in.Items = &lines
		}
		return in, true, nil
	}
	present, err = decodeStrict(body, &in, true)
	return in, present, err
}

func (s *server) checkout(c *fiber.Ctx) error {
	in, present, err := decodeItems(c.Body())
	if err != nil {
		return err
	}
	key, err := idempotencyKey(c)
	if err != nil {
		return err
	}
	ctx, user := c.UserContext(), principal(c).UserID
	fromCart := !present || in.Items == nil
	var lines []engine.Line
	if fromCart {
		if lines, err = s.cartLines(c); err != nil {
			return err
		}
		if len(lines) == 0 {
			// A retry of a cart checkout finds the cart emptied by the first attempt.
			if key == "" {
				return errCartEmpty
			}
			o, err := s.inv.CartOrder(ctx, user, key)
			if errors.Is(err, engine.ErrNotFound) {
				return errCartEmpty
			}
			if err != nil {
				return err
			}
			markReplay(c, true)
			return sendOrder(c, http.StatusCreated, &o)
		}
	} else {
		lines = *in.Items
	}
	// A cart checkout's request is "buy my cart" whatever it holds: a retry with its key
	// replays the order even if the cart changed since (a line added while it ran stays
	// in the cart), and a buy-now under the same key is another request (422).
	o, err := placeOrder(ctx, s.inv, user, lines, key, s.cfg.RateLimitPerMinute, fromCart, queuePass(c))
	if err != nil {
		return err
	}
	s.passesSpent(o.PassesSpent)
	// Only what was bought leaves the cart (a line added or changed while the checkout
	// ran stays), and a replay removes it too: the first attempt may have bought the
	// lines and failed before taking them out.
	if fromCart {
		if err := s.removeBought(ctx, user, o.Items); err != nil {
			reqLog(c, s.log).Warn("remove bought lines from the cart", "user", user, "err", err)
		}
	}
	markReplay(c, o.Replayed)
	return sendOrder(c, http.StatusCreated, &o)
}

// sendOrder answers with an order, encoded without reflection into a stack buffer
// and copied into the response's pooled body.
func sendOrder(c *fiber.Ctx, status int, o *engine.Order) error {
	c.Status(status).Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	var buf [512]byte
	c.Response().ResetBody()
	c.Response().AppendBody(appendOrder(buf[:0], o))
	return nil
}

type holdView struct {
	ID        string            `json:"id"`
	Items     []engine.Item     `json:"items"`
	Status    engine.HoldStatus `json:"status"`
	ExpiresAt time.Time         `json:"expiresAt"`
	CreatedAt time.Time         `json:"createdAt"`
	OrderID   string            `json:"orderId,omitempty"`
}

func newHoldView(h engine.Hold) holdView {
	return holdView{ID: h.ID, Items: h.Items, Status: h.Status, ExpiresAt: h.ExpiresAt, CreatedAt: h.CreatedAt, OrderID: h.OrderID}
}

func (s *server) createHold(c *fiber.Ctx) error {
	var in struct {
		Items      *[]engine.Line `json:"items"`
		TTLSeconds *int64         `json:"ttlSeconds"`
	}
	if _, err := decodeStrict(c.Body(), &in, false); err != nil {
		return err
	}
	if in.Items == nil {
		return validation("items", "is required")
	}
	ttl := int64(600)
	if in.TTLSeconds != nil {
		ttl = *in.TTLSeconds
	}
	if ttl < 1 || ttl > 3600 {
		return validation("ttlSeconds", "must be between 1 and 3600")
	}
	key, err := idempotencyKey(c)
	if err != nil {
		return err
	}
	req := engine.ReserveRequest{UserID: principal(c).UserID, Lines: *in.Items, TTL: time.Duration(ttl) * time.Second,
		IdempotencyKey: key, RatePerMinute: s.cfg.RateLimitPerMinute, QueuePass: queuePass(c)}
	if key == "" { // with a key, the key names the hold
		req.HoldID = engine.NewID()
	}
	h, err := s.inv.Reserve(c.UserContext(), req)
	if err != nil {
		return err
	}
	s.passesSpent(h.PassesSpent)
	markReplay(c, h.Replayed)
	return c.Status(http.StatusCreated).JSON(newHoldView(h))
}

// ownHold returns the caller's hold; another user's is not found.
func (s *server) ownHold(c *fiber.Ctx) (engine.Hold, error) {
	h, err := s.inv.Hold(c.UserContext(), c.Params("id"))
	if errors.Is(err, engine.ErrInvalid) {
		return h, errNotFound
	}
	if err != nil {
		return h, err
	}
	if p := principal(c); h.UserID != p.UserID && p.Role != RoleAdmin {
		return h, errNotFound
	}
	return h, nil
}

func (s *server) getHold(c *fiber.Ctx) error {
	h, err := s.ownHold(c)
	if err != nil {
		return err
	}
	// An expired hold the sweep has not reached yet is expired all the same.
	if h.Status == engine.HoldActive && !s.now().Before(h.ExpiresAt) {
		h.Status = engine.HoldExpired
	}
	return c.JSON(newHoldView(h))
}

// owner is whose records the caller may act on: their own, or anyone's for an admin
// (empty).
func owner(c *fiber.Ctx) string {
	if p := principal(c); p.Role != RoleAdmin {
		return p.UserID
	}
	return ""
}

// pathID is the record id in the path; one that cannot name a record is not found.
func pathID(c *fiber.Ctx) (string, error) {
	id := strings.Clone(c.Params("id")) // c.Params points into a buffer fasthttp reuses
	if !engine.ValidID(id) {
		return "", errNotFound
	}
	return id, nil
}

func (s *server) commitHold(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	if err := s.bindKey(c, "commit", id); err != nil {
		return err
	}
	o, err := s.inv.Commit(c.UserContext(), engine.CommitRequest{HoldID: id, OrderID: engine.OrderIDForHold(id),
		Owner: owner(c), RatePerMinute: s.cfg.RateLimitPerMinute, RateUser: principal(c).UserID})
	if err != nil {
		return err
	}
	markReplay(c, o.Replayed)
	return sendOrder(c, http.StatusCreated, &o)
}

func (s *server) releaseHold(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	h, err := s.inv.Release(c.UserContext(), engine.ReleaseRequest{HoldID: id, Owner: owner(c)})
	if err != nil {
		return err
	}
	return c.JSON(newHoldView(h))
}

// bindKey ties an Idempotency-Key to the one target it was first used on, for routes
// that are idempotent by nature (commit, cancel): a retry with the same key and target
// proceeds (and replays), the same key on another target is idempotency_key_reused.
func (s *server) bindKey(c *fiber.Ctx, op, target string) error {
	key, err := idempotencyKey(c)
	if err != nil || key == "" {
		return err
	}
	user := principal(c).UserID
	k := s.inv.Keys().Idem("bind:"+op+":"+user, key)
	ctx := c.UserContext()
	var bound string
	for range 2 { // the binding may expire between the two calls: once more, then
		ok, err := s.rdb.SetNX(ctx, k, target, 25*time.Hour).Result()
		if err != nil {
			return redisErr(err)
		}
		if ok {
			return nil
		}
		if bound, err = s.rdb.Get(ctx, k).Result(); !errors.Is(err, redis.Nil) {
			if err != nil {
				return redisReadErr(err)
			}
			break
		}
	}
	if bound != target {
		return engine.ErrIdempotencyKeyReused
	}
	return nil
}

// getOrder reads an order from Redis (where it is the moment checkout returns) or,
// once Redis has let it go, from MongoDB; another user's order is not found.
func (s *server) getOrder(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	o, err := s.inv.Order(ctx, id)
	if errors.Is(err, engine.ErrNotFound) {
		o, err = s.store.Order(ctx, id)
	}
	if err != nil {
		return err
	}
	if own := owner(c); own != "" && o.UserID != own {
		return errNotFound
	}
	return c.JSON(o)
}

func (s *server) cancelOrder(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	if err := s.bindKey(c, "cancel", id); err != nil {
		return err
	}
	ctx := c.UserContext()
	o, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: id, Owner: owner(c)})
	if errors.Is(err, engine.ErrNotFound) {
		// Redis let the record go (7 days after MongoDB had it): cancel from MongoDB's
		// copy, written back into Redis, through the normal cancel script.
		var lines string
		if o, lines, err = s.store.OrderRecord(ctx, id); err != nil {
			return err
		}
		if own := owner(c); own != "" && o.UserID != own {
			return errNotFound
		}
		o, err = s.inv.CancelRestored(ctx, o, lines)
	}
	if err != nil {
		return err
	}
	markReplay(c, o.Replayed)
	return c.JSON(o)
}

func (s *server) listOrders(c *fiber.Ctx) error {
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	p := principal(c)
	user := p.UserID
	if p.Role == RoleAdmin {
		user = c.Query("userId")
	} else if q := c.Query("userId"); q != "" && q != p.UserID {
		return errForbidden
	}
	orders, next, err := s.store.Orders(c.UserContext(), user, c.Query("cursor"), limit)
	if err != nil {
		return err
	}
	var nc any
	if next != "" {
		nc = next
	}
	return c.JSON(fiber.Map{"items": orders, "nextCursor": nc})
}
