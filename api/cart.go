package api

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/api/codes"
	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/scripts/lua"
)

// A cart is a Redis hash per user (sku → quantity) whose TTL each write refreshes.
// Adding to a cart does not touch stock; checkout decides.

var (
	// scriptCartPut sets or removes a line, refusing a new line to a full cart in the
	// same step (a check from Go would race with a concurrent add).
	scriptCartPut = redis.NewScript(lua.CartPut)
	// scriptCartRemove takes the lines a checkout bought out of the cart, each only if
	// its quantity is still the one bought.
	scriptCartRemove = redis.NewScript(lua.CartRemove)
)

// removeBought takes the items an order bought out of user's cart, each line only if it
// still holds the quantity bought: a line added or changed meanwhile stays.
func (s *server) removeBought(ctx context.Context, user string, items []engine.Item) error {
	qty := make(map[string]int64, len(items))
	var skus []string
	for _, it := range items {
		if _, ok := qty[it.SKU]; !ok {
			skus = append(skus, it.SKU)
		}
		qty[it.SKU] += it.Quantity
	}
	args := make([]any, 0, 2*len(skus))
	for _, sku := range skus {
		args = append(args, sku, qty[sku])
	}
	if len(args) == 0 {
		return nil
	}
	return scriptCartRemove.Run(ctx, s.rdb, []string{s.cartKey(user)}, args...).Err()
}

type cartLine struct {
	SKU       string `json:"sku"`
	Quantity  int64  `json:"quantity"`
	UnitPrice int64  `json:"unitPrice"`
	LineTotal int64  `json:"lineTotal"`
}

type cartView struct {
	Items    []cartLine `json:"items"`
	Total    int64      `json:"total"`
	Currency string     `json:"currency"`
}

func (s *server) cartKey(user string) string { return s.inv.Keys().Cart(user) }

// cartLines reads the caller's cart as engine lines, in SKU order.
func (s *server) cartLines(c *fiber.Ctx) ([]engine.Line, error) {
	m, err := s.rdb.HGetAll(c.UserContext(), s.cartKey(principal(c).UserID)).Result()
	if err != nil {
		return nil, engine.ReadErr("cart", err)
	}
	lines := make([]engine.Line, 0, len(m))
	for sku, q := range m {
		n, _ := strconv.ParseInt(q, 10, 64)
		lines = append(lines, engine.Line{SKU: sku, Quantity: n})
	}
	slices.SortFunc(lines, func(a, b engine.Line) int {
		if a.SKU < b.SKU {
			return -1
		}
		return 1
	})
	return lines, nil
}

func (s *server) renderCart(c *fiber.Ctx) error {
	lines, err := s.cartLines(c)
	if err != nil {
		return err
	}
	skus := make([]string, len(lines))
	for i, l := range lines {
		skus[i] = l.SKU
	}
	prices, err := s.inv.Prices(c.UserContext(), skus)
	if err != nil {
		return err
	}
	v := cartView{Items: make([]cartLine, 0, len(lines))}
	for _, l := range lines {
		p := prices[l.SKU]
		if v.Currency == "" {
			v.Currency = p.Currency
		}
		v.Items = append(v.Items, cartLine{SKU: l.SKU, Quantity: l.Quantity, UnitPrice: p.Amount, LineTotal: p.Amount * l.Quantity})
		v.Total += p.Amount * l.Quantity
	}
	return c.JSON(v)
}

func (s *server) getCart(c *fiber.Ctx) error { return s.renderCart(c) }

func (s *server) putCartItem(c *fiber.Ctx) error {
	sku, err := pathSKU(c)
	if err != nil {
		return err
	}
	var in struct {
		Quantity *int64 `json:"quantity"`
	}
	if _, err := decodeStrict(c.Body(), &in, false); err != nil {
		return err
	}
	if in.Quantity == nil || *in.Quantity < 0 || *in.Quantity > engine.MaxQuantity {
		return validation("quantity", "must be between 0 and 1000 (0 removes the line)")
	}
	ctx, key := c.UserContext(), s.cartKey(principal(c).UserID)
	if *in.Quantity > 0 {
		prices, err := s.inv.Prices(ctx, []string{sku})
		if err != nil {
			return err
		}
		if _, ok := prices[sku]; !ok {
			return problem(http.StatusNotFound, codes.NotFound, "no product "+sku)
		}
	}
	res, err := scriptCartPut.Run(ctx, s.rdb, []string{key}, sku, *in.Quantity, engine.MaxLines,
		int64(s.cfg.CartTTL/time.Second)).Text()
	if err != nil {
		return redisErr(err)
	}
	if res == "full" {
		return validation("sku", "a cart holds at most 100 lines")
	}
	return s.renderCart(c)
}

func (s *server) deleteCartItem(c *fiber.Ctx) error {
	sku, err := pathSKU(c)
	if err != nil {
		return err
	}
	if err := s.rdb.HDel(c.UserContext(), s.cartKey(principal(c).UserID), sku).Err(); err != nil {
		return redisErr(err)
	}
	return s.renderCart(c)
}

func (s *server) clearCart(c *fiber.Ctx) error {
	if err := s.rdb.Del(c.UserContext(), s.cartKey(principal(c).UserID)).Err(); err != nil {
		return redisErr(err)
	}
	return c.SendStatus(http.StatusNoContent)
}
