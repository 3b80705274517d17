package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// CreateProduct creates a SKU with its initial stock.
// Errors: ErrInvalid, ErrAlreadyExists, ErrUnavailable, ErrOutcomeUnknown.
func (r *Redis) CreateProduct(ctx context.Context, p Product) (Level, error) {
	if err := checkProduct(p); err != nil {
		return Level{}, fmt.Errorf("create product: %w", err)
	}
	lv := Level{SKU: p.SKU, Available: p.Stock, Version: 1}
	part, err := r.put(ctx, "create", p, lv)
	if err != nil {
		return Level{}, fmt.Errorf("create product %s: %w", p.SKU, err)
	}
	lv.Partition = part.n
	return lv, nil
}

func (r *Redis) put(ctx context.Context, mode string, p Product, lv Level) (*partition, error) {
	defer r.restocking()()
	part, err := r.assign(ctx, p.SKU, p.Group)
	if err != nil {
		return nil, err
	}
	k := part.k
	reply, err := run(ctx, r.sc, scriptCreate,
		[]string{k.Outbox(), k.Stock(p.SKU), k.SKUs(), k.RestockChannel()},
		mode, p.SKU, lv.Available, lv.Reserved, lv.Sold, lv.Version,
		p.Price, p.Currency, p.MaxPerUser, unixMs(p.SaleStartsAt), unixMs(p.SaleEndsAt), NewID(),
		roomRate(p.WaitingRoom), newRoomSecret())
	if err != nil {
		return nil, err
	}
	switch reply.status() {
	case "exists":
		return nil, ErrAlreadyExists
	case "replay":
		return part, nil
	}
	if err := reply.expect("ok"); err != nil {
		return nil, err
	}
	if lv.Available > 0 {
		r.restocked(p.SKU)
	}
	return part, nil
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
	return checkRoom(p.WaitingRoom)
}

func validCurrency(c string) bool {
	return len(c) == 3 && strings.ToUpper(c) == c && validToken(c, 3)
}

// UpdateProduct changes a SKU's sale attributes, never its levels.
// Errors: ErrInvalid, ErrNotFound, ErrUnavailable, ErrOutcomeUnknown.
func (r *Redis) UpdateProduct(ctx context.Context, sku string, patch ProductPatch) error {
	if err := checkSKU("sku", sku); err != nil {
		return fmt.Errorf("update product: %w", err)
	}
	if err := checkRoom(patch.WaitingRoom); err != nil {
		return fmt.Errorf("update product: %w", err)
	}
	room := ""
	if patch.WaitingRoom != nil {
		room = strconv.FormatInt(roomRate(patch.WaitingRoom), 10)
	}
	args := []any{room, newRoomSecret()}
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
	if len(args) == 2 && room == "" {
		return nil
	}
	keys, err := r.roomKeys(ctx, sku)
	if err != nil {
		return fmt.Errorf("update product %s: %w", sku, err)
	}
	reply, err := run(ctx, r.sc, scriptUpdate, keys, args...)
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

// Price is what a unit of a SKU costs now.
type Price struct {
	Amount   int64
	Currency string
}

// Prices reads the current prices of many SKUs in one round trip; unknown SKUs are
// left out of the map.
func (r *Redis) Prices(ctx context.Context, skus []string) (map[string]Price, error) {
	parts, err := r.partitionsOf(ctx, skus)
	if err != nil {
		return nil, fmt.Errorf("prices: %w", err)
	}
	cmds := make([]*redis.SliceCmd, len(skus))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sku := range skus {
			cmds[i] = p.HMGet(ctx, parts[i].k.Stock(sku), "p", "c")
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
