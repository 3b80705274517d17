package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// reply is a script's answer: a status word, then its values.
type reply []any

// run runs a script that may change data. A caller whose context has ended by now is
// answered ErrUnavailable without sending anything; once the script is sent, a lost
// reply is ErrOutcomeUnknown (see writeErr).
func run(ctx context.Context, s scriptRunner, script *redis.Script, keys []string, args ...any) (reply, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("script: not sent: %w: %w", ErrUnavailable, err)
	}
	return runResult{s.Run(ctx, script, keys, args...)}.result()
}

type runResult struct{ cmd *redis.Cmd }

func (r runResult) result() (reply, error) {
	v, err := r.cmd.Slice()
	if err != nil {
		return nil, writeErr("script", err)
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("script: empty reply")
	}
	return reply(v), nil
}

func (r reply) status() string { return r.str(0) }

func (r reply) str(i int) string {
	if i >= len(r) {
		return ""
	}
	return asString(r[i])
}

func (r reply) num(i int) int64 {
	if i >= len(r) {
		return 0
	}
	return asInt(r[i])
}

// expect turns an unexpected status into an internal error.
func (r reply) expect(status string) error {
	if r.status() == status {
		return nil
	}
	return fmt.Errorf("script: unexpected reply %q", r.status())
}

func asString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

func asInt(v any) int64 {
	switch v := v.(type) {
	case int64:
		return v
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}

// parseItems reads lines as the scripts write them: "sku:qty:price" joined by ",", a
// line counted against a per-user limit ending in ":L".
func parseItems(s string) ([]Item, error) {
	if s == "" {
		return nil, nil
	}
	items := make([]Item, 0, strings.Count(s, ",")+1)
	for part := range strings.SplitSeq(s, ",") {
		sku, rest, ok1 := strings.Cut(part, ":")
		qty, price, ok2 := strings.Cut(rest, ":")
		price = strings.TrimSuffix(price, ":L")
		q, err1 := strconv.ParseInt(qty, 10, 64)
		p, err2 := strconv.ParseInt(price, 10, 64)
		if !ok1 || !ok2 || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("malformed line %q", part)
		}
		items = append(items, Item{SKU: sku, Quantity: q, UnitPrice: p})
	}
	return items, nil
}
