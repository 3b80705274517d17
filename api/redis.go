package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/flashstock/flashstock/engine"
)

// redisErr marks a failed Redis call of the API's own (carts) as unavailable.
func redisErr(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", engine.ErrUnavailable, err)
}
