package engine

import "strconv"

// keys names every Redis key of one partition. All of them carry the partition's hash
// tag, so each script's keys live in one Redis Cluster slot. A partition holds SKUs that
// may be bought together; more partitions mean more slots to spread over a cluster.
type keys struct {
	prefix string // "fs:{<partition>}:"
}

func newKeys(partition string) keys { return keys{prefix: "fs:{" + partition + "}:"} }

func (k keys) stock(sku string) string  { return k.prefix + "s:" + sku }
func (k keys) bought(sku string) string { return k.prefix + "b:" + sku }
func (k keys) order(id string) string   { return k.prefix + "o:" + id }
func (k keys) hold(id string) string    { return k.prefix + "h:" + id }
func (k keys) holdIndex() string        { return k.prefix + "hx" }
func (k keys) holdQuarantine() string   { return k.prefix + "hx:bad" }
func (k keys) outbox() string           { return k.prefix + "ob" }
func (k keys) skus() string             { return k.prefix + "skus" }

// idem names the idempotency record of one (scope, key): the user's length prefixes it so
// that no two (scope, key) pairs share a name.
func (k keys) idem(scope, key string) string {
	return k.prefix + "i:" + strconv.Itoa(len(scope)) + ":" + scope + ":" + key
}
