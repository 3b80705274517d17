package api

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/store"
)

// productView is a Product of the contract: catalog fields and live stock.
type productView struct {
	SKU          string             `json:"sku"`
	Name         string             `json:"name"`
	Description  string             `json:"description"`
	Price        int64              `json:"price"`
	Currency     string             `json:"currency"`
	MaxPerUser   int64              `json:"maxPerUser"`
	SaleStartsAt *time.Time         `json:"saleStartsAt"`
	SaleEndsAt   *time.Time         `json:"saleEndsAt"`
	Stock        stockView          `json:"stock"`
	WaitingRoom  engine.WaitingRoom `json:"waitingRoom"`
	Partition    int                `json:"partition"`
	Group        string             `json:"group,omitempty"`
}

type stockView struct {
	Available int64 `json:"available"`
	Reserved  int64 `json:"reserved"`
	Sold      int64 `json:"sold"`
}

func newProductView(p store.Product, lv engine.Level) productView {
	v := productView{SKU: p.SKU, Name: p.Name, Description: p.Description, Price: p.Price, Currency: p.Currency,
		MaxPerUser: p.MaxPerUser, SaleStartsAt: p.SaleStartsAt, SaleEndsAt: p.SaleEndsAt,
		Stock: stockView{lv.Available, lv.Reserved, lv.Sold}, Partition: lv.Partition, Group: p.Group}
	if p.WaitingRoom != nil {
		v.WaitingRoom = *p.WaitingRoom
	}
	return v
}

func (s *server) listProducts(c *fiber.Ctx) error {
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	cursor := c.Query("cursor")
	if cursor != "" && !engine.ValidSKU(cursor) {
		return validation("cursor", "not a cursor this API issued")
	}
	ctx := c.UserContext()
	page, err := s.store.Products(ctx, cursor, limit+1)
	if err != nil {
		return err
	}
	next := ""
	if len(page) > limit {
		page, next = page[:limit], page[limit-1].SKU
	}
	skus := make([]string, len(page))
	for i, p := range page {
		skus[i] = p.SKU
	}
	levels, err := s.levels(c, skus)
	if err != nil {
		return err
	}
	items := make([]productView, len(page))
	for i, p := range page {
		items[i] = newProductView(p, levels[i])
	}
	var nc any
	if next != "" {
		nc = next
	}
	return c.JSON(fiber.Map{"items": items, "nextCursor": nc})
}

// levels reads live levels in one round trip; a SKU missing from Redis shows zeros.
func (s *server) levels(c *fiber.Ctx, skus []string) ([]engine.Level, error) {
	found, err := s.inv.Lookup(c.UserContext(), skus)
	if err != nil {
		return nil, err
	}
	out := make([]engine.Level, len(skus))
	for i, sku := range skus {
		out[i] = found[sku]
	}
	return out, nil
}

func queryLimit(c *fiber.Ctx) (int, error) {
	raw := c.Query("limit")
	if raw == "" {
		return 50, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > 200 {
		return 0, validation("limit", "must be between 1 and 200")
	}
	return n, nil
}

// pathSKU is the SKU in the path, checked. It is a copy: c.Params points into a buffer fasthttp reuses for the next request,
// and a SKU outlives the handler (a metric's label, a queue ticket).
func pathSKU(c *fiber.Ctx) (string, error) {
	sku := strings.Clone(c.Params("sku"))
	if !engine.ValidSKU(sku) {
		return "", validation("sku", "must be 1-64 characters of [A-Za-z0-9._-]")
	}
	return sku, nil
}

func (s *server) getProduct(c *fiber.Ctx) error {
	sku, err := pathSKU(c)
	if err != nil {
		return err
	}
	p, err := s.store.Product(c.UserContext(), sku)
	if err != nil {
		return err
	}
	lv, err := s.levels(c, []string{sku})
	if err != nil {
		return err
	}
	return c.JSON(newProductView(p, lv[0]))
}

type productInput struct {
	SKU          *string    `json:"sku"`
	Name         *string    `json:"name"`
	Description  *string    `json:"description"`
	Price        *int64     `json:"price"`
	Currency     *string    `json:"currency"`
	Stock        *int64     `json:"stock"`
	MaxPerUser   *int64     `json:"maxPerUser"`
	SaleStartsAt *time.Time `json:"saleStartsAt"`
	SaleEndsAt   *time.Time `json:"saleEndsAt"`
	WaitingRoom  *roomInput `json:"waitingRoom"`
	Group        *string    `json:"group"`
}

// roomInput is a product's waitingRoom as sent: enabled is required, admitPerMinute
// is required when enabled.
type roomInput struct {
	Enabled        *bool  `json:"enabled"`
	AdmitPerMinute *int64 `json:"admitPerMinute"`
}

// room checks a waitingRoom input (nil when absent); the engine checks the bounds.
func (in *roomInput) room() (*engine.WaitingRoom, error) {
	if in == nil {
		return nil, nil
	}
	if in.Enabled == nil {
		return nil, validation("waitingRoom.enabled", "is required")
	}
	w := &engine.WaitingRoom{Enabled: *in.Enabled}
	if in.AdmitPerMinute != nil {
		w.AdmitPerMinute = *in.AdmitPerMinute
	} else if w.Enabled {
		return nil, validation("waitingRoom.admitPerMinute", "is required when the room is enabled")
	}
	return w, nil
}

func (s *server) createProduct(c *fiber.Ctx) error {
	var in productInput
	if _, err := decodeStrict(c.Body(), &in, false); err != nil {
		return err
	}
	switch {
	case in.SKU == nil || !engine.ValidSKU(*in.SKU):
		return validation("sku", "must be 1-64 characters of [A-Za-z0-9._-]")
	case in.Name == nil || strings.TrimSpace(*in.Name) == "" || len(*in.Name) > 200:
		return validation("name", "is required, at most 200 characters")
	case in.Price == nil:
		return validation("price", "is required")
	case in.Currency == nil:
		return validation("currency", "is required")
	case in.Stock == nil:
		return validation("stock", "is required")
	case in.Description != nil && len(*in.Description) > 5000:
		return validation("description", "must be at most 5000 characters")
	case in.Group != nil && !engine.ValidSKU(*in.Group):
		return validation("group", "must be 1-64 characters of [A-Za-z0-9._-]")
	}
	room, err := in.WaitingRoom.room()
	if err != nil {
		return err
	}
	p := store.Product{SKU: *in.SKU, Name: *in.Name, Price: *in.Price, Currency: *in.Currency,
		SaleStartsAt: in.SaleStartsAt, SaleEndsAt: in.SaleEndsAt, WaitingRoom: room}
	if in.Description != nil {
		p.Description = *in.Description
	}
	if in.MaxPerUser != nil {
		p.MaxPerUser = *in.MaxPerUser
	}
	if in.Group != nil {
		p.Group = *in.Group
	}
	ctx := c.UserContext()
	// The engine validates and creates atomically; the catalog follows. A retry after
	// a failed catalog write finds the SKU in the engine and completes the catalog.
	lv, err := s.inv.CreateProduct(ctx, p.EngineProduct(*in.Stock))
	if errors.Is(err, engine.ErrAlreadyExists) {
		if _, cerr := s.store.Product(ctx, p.SKU); !errors.Is(cerr, engine.ErrNotFound) {
			return err
		}
		lvs, lerr := s.inv.Levels(ctx, []string{p.SKU})
		if lerr != nil {
			return lerr
		}
		lv, err = lvs[0], nil
	}
	if err != nil {
		return err
	}
	if err := s.store.PutProduct(ctx, p); err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(newProductView(p, lv))
}

func (s *server) patchProduct(c *fiber.Ctx) error {
	sku, err := pathSKU(c)
	if err != nil {
		return err
	}
	var raw map[string]any
	if _, err := decodeStrict(c.Body(), &raw, false); err != nil {
		return err
	}
	var in productInput
	if _, err := decodeStrict(c.Body(), &in, false); err != nil {
		return err
	}
	if in.SKU != nil || in.Stock != nil || in.Currency != nil || in.Group != nil {
		return validation("body", "only name, description, price, maxPerUser, saleStartsAt, saleEndsAt and waitingRoom can change")
	}
	room, err := in.WaitingRoom.room()
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	p, err := s.store.Product(ctx, sku)
	if err != nil {
		return err
	}
	patch := engine.ProductPatch{Price: in.Price, MaxPerUser: in.MaxPerUser, WaitingRoom: room}
	if room != nil {
		p.WaitingRoom = room
	}
	if in.Name != nil {
		if strings.TrimSpace(*in.Name) == "" || len(*in.Name) > 200 {
			return validation("name", "must be 1-200 characters")
		}
		p.Name = *in.Name
	}
	if in.Description != nil {
		p.Description = *in.Description
	}
	if in.Price != nil {
		p.Price = *in.Price
	}
	if in.MaxPerUser != nil {
		p.MaxPerUser = *in.MaxPerUser
	}
	// A present null opens that side of the sale window.
	if v, ok := raw["saleStartsAt"]; ok {
		p.SaleStartsAt, patch.SaleStartsAt = in.SaleStartsAt, orZero(in.SaleStartsAt, v)
	}
	if v, ok := raw["saleEndsAt"]; ok {
		p.SaleEndsAt, patch.SaleEndsAt = in.SaleEndsAt, orZero(in.SaleEndsAt, v)
	}
	if p.SaleStartsAt != nil && p.SaleEndsAt != nil && !p.SaleEndsAt.After(*p.SaleStartsAt) {
		return validation("saleEndsAt", "must be after saleStartsAt")
	}
	if err := s.inv.UpdateProduct(ctx, sku, patch); err != nil {
		return err
	}
	if err := s.store.PutProduct(ctx, p); err != nil {
		return err
	}
	lv, err := s.levels(c, []string{sku})
	if err != nil {
		return err
	}
	return c.JSON(newProductView(p, lv[0]))
}

func orZero(t *time.Time, raw any) *time.Time {
	if raw == nil || t == nil {
		return &time.Time{}
	}
	return t
}

func (s *server) getLevel(c *fiber.Ctx) error {
	sku, err := pathSKU(c)
	if err != nil {
		return err
	}
	lv, err := s.inv.Levels(c.UserContext(), []string{sku})
	if err != nil {
		return err
	}
	return c.JSON(lv[0])
}

func (s *server) adjust(c *fiber.Ctx) error {
	sku, err := pathSKU(c)
	if err != nil {
		return err
	}
	var in struct {
		Delta  *int64  `json:"delta"`
		Reason *string `json:"reason"`
	}
	if _, err := decodeStrict(c.Body(), &in, false); err != nil {
		return err
	}
	if in.Delta == nil {
		return validation("delta", "is required")
	}
	if in.Reason == nil || *in.Reason == "" {
		return validation("reason", "is required")
	}
	key, err := idempotencyKey(c)
	if err != nil {
		return err
	}
	lv, err := s.inv.Adjust(c.UserContext(), engine.AdjustRequest{SKU: sku, Delta: *in.Delta, Reason: *in.Reason,
		Actor: principal(c).UserID, IdempotencyKey: key})
	if err != nil {
		return err
	}
	markReplay(c, lv.Replayed)
	return c.JSON(lv)
}

func (s *server) setLevel(c *fiber.Ctx) error {
	sku, err := pathSKU(c)
	if err != nil {
		return err
	}
	var in struct {
		Available       *int64 `json:"available"`
		ExpectedVersion *int64 `json:"expectedVersion"`
	}
	if _, err := decodeStrict(c.Body(), &in, false); err != nil {
		return err
	}
	if in.Available == nil {
		return validation("available", "is required")
	}
	if in.ExpectedVersion == nil {
		return validation("expectedVersion", "is required")
	}
	lv, err := s.inv.SetLevel(c.UserContext(), engine.SetRequest{SKU: sku, Available: *in.Available,
		ExpectedVersion: *in.ExpectedVersion, Reason: "set by admin", Actor: principal(c).UserID})
	if err != nil {
		return err
	}
	return c.JSON(lv)
}

// idempotencyKey reads the optional Idempotency-Key header (1-128 printable characters).
func idempotencyKey(c *fiber.Ctx) (string, error) {
	key := strings.Clone(c.Get("Idempotency-Key")) // c.Get points into a buffer fasthttp reuses
	if key != "" && !engine.ValidKey(key) {
		return "", validation("Idempotency-Key", "must be 1-128 printable ASCII characters")
	}
	return key, nil
}

func markReplay(c *fiber.Ctx, replayed bool) {
	if replayed {
		c.Set("Idempotent-Replayed", "true")
	}
}
