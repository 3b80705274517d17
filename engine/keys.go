package engine

import "strconv"

// Keys names every Redis key flashstock uses; nothing else builds a key name. Every key
// of a partition carries the partition's hash tag, so each script's keys live in one
// Redis Cluster slot. A partition holds SKUs that may be bought together; more
// partitions mean more slots to spread over a cluster.
type Keys struct {
	prefix string // "fs:{<partition>}:"
}

// NewKeys names the keys of one partition.
func NewKeys(partition string) Keys { return Keys{prefix: "fs:{" + partition + "}:"} }

// Stock is a SKU's stock hash (see docs/ARCHITECTURE.md for its fields).
func (k Keys) Stock(sku string) string { return k.prefix + "s:" + sku }

// Bought is a SKU's per-user purchase counters (units taken under its limit).
func (k Keys) Bought(sku string) string { return k.prefix + "b:" + sku }

// Order is an order record.
func (k Keys) Order(id string) string { return k.prefix + "o:" + id }

// Hold is a hold record.
func (k Keys) Hold(id string) string { return k.prefix + "h:" + id }

// HoldIndex is the sorted set of active holds by expiry (the sweep's index).
func (k Keys) HoldIndex() string { return k.prefix + "hx" }

// HoldQuarantine is the sorted set of holds the sweep could not read.
func (k Keys) HoldQuarantine() string { return k.prefix + "hx:bad" }

// Outbox is the stream every movement is appended to.
func (k Keys) Outbox() string { return k.prefix + "ob" }

// DeadLetter is the stream where the syncer parks outbox entries it cannot decode.
func (k Keys) DeadLetter() string { return k.prefix + "ob:dead" }

// Directory is the hash of every SKU's partition (sku -> partition number), kept in
// partition 0 when there are several.
func (k Keys) Directory() string { return k.prefix + "dir" }

// SKUs is the set of every SKU with a stock record.
func (k Keys) SKUs() string { return k.prefix + "skus" }

// RestockChannel is the pub/sub channel on which scripts announce returned units.
func (k Keys) RestockChannel() string { return k.prefix + "restock" }

// RateLimit is a user's sliding rate-limit window.
func (k Keys) RateLimit(user string) string { return k.prefix + "rl:" + user }

// Idem names the idempotency record of one (scope, key): the scope's length prefixes it
// so that no two (scope, key) pairs share a name.
func (k Keys) Idem(scope, key string) string {
	return k.prefix + "i:" + strconv.Itoa(len(scope)) + ":" + scope + ":" + key
}

// Throttle is one login/register limiter: its scope (by address, by email) and the
// hash of what it limits.
func (k Keys) Throttle(scope, hash string) string { return k.prefix + "t:" + scope + ":" + hash }

// Cart is a user's cart.
func (k Keys) Cart(user string) string { return k.prefix + "cart:" + user }

// Rebase is the lock that lets one process at a time restore a SKU after a rollback.
func (k Keys) Rebase(sku string) string { return k.prefix + "rebase:" + sku }

// Simulation names the flash-sale simulation's keys, by suffix: "lock" (one run at a
// time across replicas) and "runs" (runs whose synthetic buyers are still to forget).
func (k Keys) Simulation(suffix string) string { return k.prefix + "sim:" + suffix }

// Job names a scheduled job's keys: its per-tick claims and its run lock, by suffix.
func (k Keys) Job(name, suffix string) string { return k.prefix + "jobs:" + name + ":" + suffix }

// Room names a SKU's waiting-room keys, by suffix: "" the room's state hash (late
// arrivals' counter, admission bucket, progress), "w" the waiting buyers (sorted set by
// place), "p" the unused passes (sorted set: user by expiry ms), "e" the buyers whose
// pass expired unused (set). They share the SKU's partition, so one script can touch
// them with the SKU's stock hash.
func (k Keys) Room(sku, suffix string) string {
	if suffix == "" {
		return k.prefix + "q:" + sku
	}
	return k.prefix + "q:" + sku + ":" + suffix
}

// XAttempt is the record of a cross-partition checkout attempt's reservation in this
// partition (scripts/lua/xcart.lua), while it is held.
func (k Keys) XAttempt(attempt string) string { return k.prefix + "xa:" + attempt }

// XEnded is the sorted set of ended reservations in this partition, "c:<attempt>"
// (committed) or "a:<attempt>" (aborted) by the time they ended: the tombstones that
// make a late reserve take nothing.
func (k Keys) XEnded() string { return k.prefix + "xend" }

// XDecisions is the sorted set of abort decisions on the cross-partition attempts whose
// primary is this partition, "a:<attempt>" by the time decided (a commit decision is
// the order record, which names its attempt; "c:<attempt>" entries of an earlier
// format are still read).
func (k Keys) XDecisions() string { return k.prefix + "xdec" }

// XAttempts is the sorted set of held reservations by expiry (the sweeper's index).
func (k Keys) XAttempts() string { return k.prefix + "xax" }

// XInFlight is the hash of units reserved by in-flight cross-partition attempts, by SKU.
func (k Keys) XInFlight() string { return k.prefix + "xin" }

// XDecision is the previous format's decision on a cross-partition attempt, at its
// primary partition: still read, and written on an abort of such an attempt, so that an
// upgrade during a sale loses nothing (XDecisions holds the decisions now).
func (k Keys) XDecision(attempt string) string { return k.prefix + "xd:" + attempt }

// XCancels is the sorted set of cross-partition orders cancelled at this partition (their
// home) whose other partitions may still owe a restore of their lines, by the time (ms)
// after which a sweeper re-drives the restores (scripts/lua/xcancel.lua).
func (k Keys) XCancels() string { return k.prefix + "xcx" }

// XRestored marks, in one of a cross-partition order's other partitions, that its lines
// there were returned by the order's cancellation: a repeated restore finds it and
// restores nothing.
func (k Keys) XRestored(order string) string { return k.prefix + "xr:" + order }

// MaxPartitions bounds the number of partitions a deployment may use.
const MaxPartitions = 1024
