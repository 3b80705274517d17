package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/clusterscript"
)

// How a failed Redis call is reported depends on whether the command could have run.
// Redis's own error replies and failures before anything was written to a connection
// mean it did not; a timeout or a broken connection after the command was written
// means nobody knows. This file is the one place that decides.

// refusedBeforeRunning reports the error replies with which Redis refuses a command
// without running it, because of its own state rather than the command's.
func refusedBeforeRunning(err error) bool {
	return redis.IsOOMError(err) || redis.IsLoadingError(err) || redis.IsReadOnlyError(err) ||
		redis.IsMasterDownError(err) || redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
		redis.IsNoReplicasError(err) || redis.IsMaxClientsError(err) || redis.IsAuthError(err) ||
		redis.IsPermissionError(err) || hasReplyPrefix(err, "BUSY ") || hasReplyPrefix(err, "MISCONF ")
}

// hasReplyPrefix is for the refusals go-redis has no helper for (a script running too
// long, a failing RDB save).
func hasReplyPrefix(err error, prefix string) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), prefix)
}

// ReadErr classifies the error of a Redis call that changes nothing, for callers
// outside the engine that talk to Redis themselves: see readErr.
func ReadErr(op string, err error) error { return readErr(op, err) }

// WriteErr classifies the error of a Redis call that may change data, for callers
// outside the engine that talk to Redis themselves: see writeErr.
func WriteErr(op string, err error) error { return writeErr(op, err) }

// readErr classifies the error of a call that changes nothing (a read): any failure to
// get an answer is ErrUnavailable. Other errors (a malformed reply, say) stay as they
// are, for the caller to treat as internal.
func readErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, clusterscript.ErrNotRun) || errors.Is(err, clusterscript.ErrOutcomeUnknown) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	if notSent(err) || lostReply(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// writeErr classifies the error of a call that may change data (a script): ErrUnavailable
// when the command certainly did not run, ErrOutcomeUnknown when it may have.
func writeErr(op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, clusterscript.ErrNotRun):
		// clusterscript knows no node ran it, even after redirects it could not follow
		// (whose MOVED reply would otherwise read as a script's own error).
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	case errors.Is(err, clusterscript.ErrOutcomeUnknown):
		// A lost reply, or a write the replicas did not confirm (ErrNotReplicated).
		return fmt.Errorf("%s: %w: %w", op, ErrOutcomeUnknown, err)
	case notSent(err):
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	case isRedisReply(err):
		// Redis answered with an error: a script's own error (internal).
		return fmt.Errorf("%s: %w", op, err)
	default:
		// A timeout, a broken connection or a context ending while the reply was
		// awaited: the command may have run.
		return fmt.Errorf("%s: %w: %w", op, ErrOutcomeUnknown, err)
	}
}

// replayReadErr classifies a failed read of the record a replay answers with: the
// record exists (the script just said so), so a read that got no answer must not be
// told as "nothing was applied" but as "retry to learn the outcome".
func replayReadErr(err error) error {
	if errors.Is(err, ErrUnavailable) {
		// Only the message is kept: the answer must not also match ErrUnavailable.
		return fmt.Errorf("%w: the request was applied earlier; its record could not be read: %s", ErrOutcomeUnknown, err)
	}
	return err
}

// notSent reports errors that mean the command never reached Redis, or that Redis
// refused it before running it.
func notSent(err error) bool {
	if errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolExhausted) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return refusedBeforeRunning(err)
}

// lostReply reports network failures: the connection broke or timed out.
func lostReply(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// isRedisReply reports an error reply from Redis itself, to the script (not a refusal
// clusterscript gave up on).
func isRedisReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !lostReply(err) &&
		!errors.Is(err, clusterscript.ErrNotRun) && !errors.Is(err, clusterscript.ErrOutcomeUnknown)
}
