package engine

import "context"

// ScriptHashes returns the SHA1 of take.lua's cluster ("#!lua") variant and of its plain
// form, for tests of what reaches a cluster.
func ScriptHashes() (shebang, plain string) {
	return clusterVariant(scriptTake).Hash(), scriptTake.Hash()
}

// SetCrossHook makes the cross-partition coordinator call f at each step (before-reserve,
// after-reserve, after-decide, mid-commit) with the attempt id, and the cross-partition
// cancel at its steps (after-cancel, mid-restore) with the order id; true stops it
// there, as a crash would. Set it before the inventory is used.
func SetCrossHook(r *Redis, f func(step, attempt string) bool) { r.x.hook = f }

// ReserveAgain sends attempt t's reserve of qty units of sku again, as a late duplicate
// would, at the SKU's partition with primary partition primary; it returns the step's
// status ("ok", "state", ...) and, for "state", the attempt's state.
func ReserveAgain(ctx context.Context, r *Redis, t string, primary int, sku string, qty int64) (string, string, error) {
	p, err := r.partitionOf(ctx, sku)
	if err != nil {
		return "", "", err
	}
	k := p.k
	rep, err := r.xrun(ctx, p, []string{k.XAttempt(t), k.Stock(sku), k.Bought(sku), k.Room(sku, "p"), k.Room(sku, "h")},
		"reserve", t, primary, "late", r.x.ttl.Milliseconds(), "late", "", sku, qty)
	if err != nil {
		return "", "", err
	}
	return rep.status(), rep.str(1), nil
}

// InFlight is partition p's hash of units held by in-flight cross-partition attempts.
func InFlight(ctx context.Context, r *Redis, p int) (map[string]string, error) {
	return r.rdb.HGetAll(ctx, r.parts[p].k.XInFlight()).Result()
}
