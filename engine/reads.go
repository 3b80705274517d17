package engine

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Levels reads many SKUs' levels in one round trip.
// Errors: ErrInvalid, ErrNotFound, ErrUnavailable.
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
	parts, err := r.partitionsOf(ctx, skus)
	if err != nil {
		return nil, err
	}
	cmds := make([]*redis.SliceCmd, len(skus))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sku := range skus {
			cmds[i] = p.HMGet(ctx, parts[i].k.Stock(sku), "a", "r", "s", "q")
		}
		return nil
	})
	if err != nil {
		return nil, readErr("read", err)
	}
	out := make(map[string]Level, len(skus))
	for i, c := range cmds {
		if v := c.Val(); v[0] != nil {
			out[skus[i]] = Level{SKU: skus[i], Available: asInt(v[0]), Reserved: asInt(v[1]), Sold: asInt(v[2]), Version: asInt(v[3]),
				Partition: parts[i].n}
		}
	}
	return out, nil
}

// SKUs lists every SKU with a stock record. Errors: ErrUnavailable.
func (r *Redis) SKUs(ctx context.Context) ([]string, error) {
	cmds := make([]*redis.StringSliceCmd, len(r.parts))
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, part := range r.parts {
			cmds[i] = p.SMembers(ctx, part.k.SKUs())
		}
		return nil
	})
	if err != nil {
		return nil, readErr("skus", err)
	}
	var skus []string
	for _, c := range cmds {
		skus = append(skus, c.Val()...)
	}
	return skus, nil
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
