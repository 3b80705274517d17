package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/scripts/lua"
)

// A partition is one hash tag: every key of its SKUs, their orders, holds and
// idempotency records, its outbox stream and its holds index share one Redis Cluster
// slot, so each script touches one slot. A SKU lives in exactly one partition, chosen
// when it is created (by hash of its group, or of the SKU) and recorded in the directory
// (a hash in partition 0) so that it never moves. A SKU the directory does not list is
// in partition 0: every SKU created while PARTITIONS was 1 stays where it was.
type partition struct {
	n     int
	k     Keys
	batch *batcher[*takeReq]
	// xbatch batches the steps of cross-partition checkouts (nil with one partition).
	xbatch *batcher[*xop]
}

// partitionTags names the partitions' hash tags: "0", "1", ... by default, so partition
// 0 is exactly the single-partition layout (fs:{0}:...); base, "base.1", ... when the
// inventory was given its own tag (tests sharing one Redis).
func partitionTags(base string, n int) []string {
	tags := make([]string, n)
	for i := range tags {
		switch {
		case base == "":
			tags[i] = strconv.Itoa(i)
		case i == 0:
			tags[i] = base
		default:
			tags[i] = base + "." + strconv.Itoa(i)
		}
	}
	return tags
}

// Partitions is the number of partitions SKUs are spread over.
func (r *Redis) Partitions() int { return len(r.parts) }

// PartitionKeys names the keys of partition p (0 <= p < Partitions()).
func (r *Redis) PartitionKeys(p int) Keys { return r.parts[p].k }

// OutboxKeys are the outbox streams of every partition, in partition order.
func (r *Redis) OutboxKeys() []string {
	keys := make([]string, len(r.parts))
	for i, p := range r.parts {
		keys[i] = p.k.Outbox()
	}
	return keys
}

// assign returns the partition a new SKU gets: the one the directory already records
// for it (a SKU created before, or a creation retried), or else its group's or its own
// hash, recorded now. Recorded first and never changed, so every process finds it.
func (r *Redis) assign(ctx context.Context, sku, group string) (*partition, error) {
	if len(r.parts) == 1 {
		return r.parts[0], nil
	}
	h := fnv.New32a()
	if group != "" {
		h.Write([]byte("group:" + group))
	} else {
		h.Write([]byte("sku:" + sku))
	}
	want := int(h.Sum32() % uint32(len(r.parts)))
	// A script, so that the entry is written at most once and, with WaitReplicas, is on
	// a replica before the SKU is created: a failover must not lose the directory entry
	// of a SKU whose stock survived. Running it twice changes nothing.
	rep, err := run(ctx, r.sc, scriptAssign, []string{r.k.Directory()}, sku, want)
	if err != nil {
		return nil, fmt.Errorf("assign partition: %w", err)
	}
	return r.partitionNamed(sku, rep.str(0))
}

// scriptAssign records a SKU's partition (scripts/lua/assign.lua).
var scriptAssign = newScript(lua.Assign)

func (r *Redis) partitionNamed(sku, v string) (*partition, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n >= len(r.parts) {
		return nil, fmt.Errorf("sku %s: the directory records partition %q, outside 0..%d (PARTITIONS was lowered?)", sku, v, len(r.parts)-1)
	}
	p := r.parts[n]
	r.dir.Store(sku, p)
	return p, nil
}

// partitionsOf returns the partition of each SKU, reading the directory for those not
// cached. A SKU the directory does not list is in partition 0 (and not cached: it may
// be created in another partition later).
func (r *Redis) partitionsOf(ctx context.Context, skus []string) ([]*partition, error) {
	out := make([]*partition, len(skus))
	if len(r.parts) == 1 {
		for i := range out {
			out[i] = r.parts[0]
		}
		return out, nil
	}
	var missing []string
	var at []int
	for i, sku := range skus {
		if p, ok := r.dir.Load(sku); ok {
			out[i] = p.(*partition)
			continue
		}
		missing, at = append(missing, sku), append(at, i)
	}
	if len(missing) == 0 {
		return out, nil
	}
	vs, err := r.rdb.HMGet(ctx, r.k.Directory(), missing...).Result()
	if err != nil {
		return nil, readErr("partitions", err)
	}
	for j, v := range vs {
		s, ok := v.(string)
		if !ok {
			out[at[j]] = r.parts[0]
			continue
		}
		p, err := r.partitionNamed(missing[j], s)
		if err != nil {
			return nil, err
		}
		out[at[j]] = p
	}
	return out, nil
}

// partitionOf is partitionsOf for one SKU.
func (r *Redis) partitionOf(ctx context.Context, sku string) (*partition, error) {
	ps, err := r.partitionsOf(ctx, []string{sku})
	if err != nil {
		return nil, err
	}
	return ps[0], nil
}

// ErrCrossPartition is the refusal of a hold whose lines live in different partitions:
// this version places holds in one partition at a time (it wraps ErrInvalid). Checkouts
// across partitions are served (xcart.go), and so are cancels of their orders
// (xcancel.go).
var ErrCrossPartition = errors.New("cross-partition cart")

// linesPartition returns the one partition every line lives in.
func (r *Redis) linesPartition(ctx context.Context, lines []Line) (*partition, error) {
	skus := make([]string, len(lines))
	for i, l := range lines {
		skus[i] = l.SKU
	}
	ps, err := r.partitionsOf(ctx, skus)
	if err != nil {
		return nil, err
	}
	for _, p := range ps[1:] {
		if p != ps[0] {
			return nil, crossPartition(lines, ps)
		}
	}
	return ps[0], nil
}

func crossPartition(lines []Line, ps []*partition) error {
	by := map[int][]string{}
	for i, l := range lines {
		by[ps[i].n] = append(by[ps[i].n], l.SKU)
	}
	var groups []string
	for n, skus := range by {
		groups = append(groups, fmt.Sprintf("partition %d: %s", n, strings.Join(skus, ", ")))
	}
	sort.Strings(groups)
	return &ValidationError{Field: "items", Reason: "the SKUs live in different partitions (" + strings.Join(groups, "; ") +
		"): this version holds one partition's SKUs per hold; create SKUs held together with the same group",
		cause: ErrCrossPartition}
}

// recordPartition finds the partition holding a record (an order or a hold) by its id:
// one pipelined EXISTS per partition. Records of no partition are in partition 0 (whose
// read then answers not found).
func (r *Redis) recordPartition(ctx context.Context, key func(Keys) string) (*partition, error) {
	if len(r.parts) == 1 {
		return r.parts[0], nil
	}
	cmds := make([]*redis.IntCmd, len(r.parts))
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, part := range r.parts {
			cmds[i] = p.Exists(ctx, key(part.k))
		}
		return nil
	})
	if err != nil {
		return nil, readErr("find record", err)
	}
	for i, c := range cmds {
		if c.Val() > 0 {
			return r.parts[i], nil
		}
	}
	return r.parts[0], nil
}

// PartitionOf is the partition a SKU lives in (0 for a SKU the directory does not list).
// Errors: ErrUnavailable.
func (r *Redis) PartitionOf(ctx context.Context, sku string) (int, error) {
	p, err := r.partitionOf(ctx, sku)
	if err != nil {
		return 0, err
	}
	return p.n, nil
}
