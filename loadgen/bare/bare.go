// Package bare holds the load suite's two HTTP baselines, served the way flashstock's
// server is (Fiber, its own process) so that wrk measures all three alike:
//
//   - the bare handler (New): a minimal correct checkout. It verifies the JWT on every
//     request, makes one EVALSHA (idempotency check, decrement, XADD to a stream: a
//     tiny script of its own, checkout.lua) and answers JSON. No batching, no metrics,
//     no logging, no request ids, no rate limit, no token cache.
//   - Fiber's hello world (Hello): the HTTP ceiling, what Fiber answers per second when
//     a request does nothing.
//
// The bare handler speaks enough of flashstock's contract (create a product, read its
// level, buy one line) for loadgen.HTTP to drive it and check it for oversell.
package bare

import (
	"context"
	_ "embed"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	json "github.com/goccy/go-json"
	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/auth"
	"github.com/flashstock/flashstock/engine"
)

//go:embed checkout.lua
var checkoutSource string

var checkoutScript = redis.NewScript(checkoutSource)

// Config is what the bare handler needs besides Redis.
type Config struct {
	// Secret and Issuer verify tokens, as flashstock's JWT_SECRET and JWT_ISSUER.
	Secret []byte
	Issuer string // default "flashstock"
	// Now is the clock tokens are checked against (default time.Now).
	Now func() time.Time
}

// Redis is what the handler asks of its client: scripts and the two plain commands
// the product and level routes use.
type Redis interface {
	redis.Scripter
	Set(ctx context.Context, key string, value any, expiration time.Duration) *redis.StatusCmd
	Get(ctx context.Context, key string) *redis.StringCmd
}

// Keys share the SKU's hash tag, so one script call touches one slot.
func availKey(sku string) string        { return "bare:{" + sku + "}:a" }
func outboxKey(sku string) string       { return "bare:{" + sku + "}:ob" }
func keyKey(sku, user, k string) string { return "bare:{" + sku + "}:i:" + user + ":" + k }

// fiberConfig is flashstock's server configuration (api.New) without its error
// handler, with go-json as Fiber's JSON library.
func fiberConfig() fiber.Config {
	return fiber.Config{
		DisableStartupMessage: true,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           2 * time.Minute,
		JSONEncoder:           json.Marshal,
		JSONDecoder:           json.Unmarshal,
	}
}

// Hello is the HTTP ceiling: every request, whatever its method and path, is answered
// 200 "Hello, World!".
func Hello() *fiber.App {
	app := fiber.New(fiberConfig())
	app.All("/*", func(c *fiber.Ctx) error { return c.SendString("Hello, World!") })
	return app
}

// New returns the bare handler on rdb:
//
//	POST /api/v1/checkout          {"items":[{"sku":…,"quantity":n}]}, one line, Idempotency-Key optional
//	POST /api/v1/products          {"sku":…,"stock":n} (admin): sets the SKU's stock
//	GET  /api/v1/inventory/{sku}   {"sku":…,"available":n}
//	GET  /readyz
//
// Every /api/v1 route takes a bearer token; refusals are problem+json with
// flashstock's codes (unauthorized, forbidden, validation_failed, out_of_stock).
func New(rdb Redis, cfg Config) *fiber.App {
	if cfg.Issuer == "" {
		cfg.Issuer = "flashstock"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &handler{rdb: rdb, cfg: cfg, prefix: strconv.FormatInt(time.Now().UnixNano(), 36) + "-"}
	app := fiber.New(fiberConfig())
	app.Get("/readyz", func(c *fiber.Ctx) error { return c.SendString("ready") })
	app.Post("/api/v1/checkout", h.checkout)
	app.Post("/api/v1/products", h.createProduct)
	app.Get("/api/v1/inventory/:sku", h.level)
	return app
}

type handler struct {
	rdb    Redis
	cfg    Config
	prefix string // order ids are prefix + a counter
	orders atomic.Int64
}

type problem struct {
	Status int               `json:"status"`
	Code   string            `json:"code"`
	Detail string            `json:"detail,omitempty"`
	Items  []engine.Shortage `json:"items,omitempty"`
}

func refuse(c *fiber.Ctx, p problem) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, "application/problem+json")
	return c.Status(p.Status).Send(b)
}

var errUnauthorized = problem{Status: http.StatusUnauthorized, Code: "unauthorized"}

func (h *handler) verify(c *fiber.Ctx) (auth.Principal, bool) {
	raw, ok := strings.CutPrefix(c.Get(fiber.HeaderAuthorization), "Bearer ")
	if !ok {
		return auth.Principal{}, false
	}
	p, err := auth.Verify(raw, h.cfg.Secret, h.cfg.Issuer, h.cfg.Now())
	return p, err == nil
}

type line struct {
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}

type order struct {
	ID     string `json:"id"`
	UserID string `json:"userId"`
	Items  []line `json:"items"`
	Status string `json:"status"`
}

func (h *handler) checkout(c *fiber.Ctx) error {
	p, ok := h.verify(c)
	if !ok {
		return refuse(c, errUnauthorized)
	}
	var in struct {
		Items []line `json:"items"`
	}
	if err := json.Unmarshal(c.Body(), &in); err != nil || len(in.Items) != 1 ||
		in.Items[0].SKU == "" || in.Items[0].Quantity < 1 || in.Items[0].Quantity > engine.MaxQuantity {
		return refuse(c, problem{Status: http.StatusUnprocessableEntity, Code: "validation_failed",
			Detail: "want {\"items\":[{\"sku\":…,\"quantity\":1…1000}]}, one line"})
	}
	l := in.Items[0]
	id := h.prefix + strconv.FormatInt(h.orders.Add(1), 36)
	key := c.Get("Idempotency-Key")
	if key == "" {
		key = id // never seen before: the check finds nothing
	}
	res, err := checkoutScript.Run(c.UserContext(), h.rdb,
		[]string{availKey(l.SKU), keyKey(l.SKU, p.UserID, key), outboxKey(l.SKU)},
		l.Quantity, id, p.UserID).Slice()
	if err != nil {
		return err
	}
	if len(res) != 2 {
		return errors.New("checkout.lua: unexpected reply")
	}
	switch res[0] {
	case int64(0):
		available, _ := res[1].(int64)
		return refuse(c, problem{Status: http.StatusConflict, Code: "out_of_stock",
			Items: []engine.Shortage{{SKU: l.SKU, Requested: l.Quantity, Available: available}}})
	case int64(2):
		c.Set("Idempotent-Replayed", "true")
	}
	id, _ = res[1].(string)
	return c.Status(http.StatusCreated).JSON(order{ID: id, UserID: p.UserID, Items: in.Items, Status: "confirmed"})
}

func (h *handler) createProduct(c *fiber.Ctx) error {
	p, ok := h.verify(c)
	if !ok {
		return refuse(c, errUnauthorized)
	}
	if p.Role != auth.RoleAdmin {
		return refuse(c, problem{Status: http.StatusForbidden, Code: "forbidden"})
	}
	var in struct {
		SKU   string `json:"sku"`
		Stock int64  `json:"stock"`
	}
	if err := json.Unmarshal(c.Body(), &in); err != nil || in.SKU == "" || in.Stock < 0 || in.Stock > engine.MaxUnits {
		return refuse(c, problem{Status: http.StatusUnprocessableEntity, Code: "validation_failed"})
	}
	if err := h.rdb.Set(c.UserContext(), availKey(in.SKU), in.Stock, 0).Err(); err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(fiber.Map{"sku": in.SKU, "stock": in.Stock})
}

func (h *handler) level(c *fiber.Ctx) error {
	if _, ok := h.verify(c); !ok {
		return refuse(c, errUnauthorized)
	}
	sku := c.Params("sku")
	n, err := h.rdb.Get(c.UserContext(), availKey(sku)).Int64()
	if errors.Is(err, redis.Nil) {
		return refuse(c, problem{Status: http.StatusNotFound, Code: "not_found"})
	}
	if err != nil {
		return err
	}
	return c.JSON(engine.Level{SKU: sku, Available: n})
}
