package webhook

import "time"

// endpoint is what one worker knows of one subscription's receiver: its deliveries in
// flight and its circuit breaker. The worker's mutex guards it.
//
// The breaker is closed until Threshold attempts in a row fail; then it is open for
// Cooldown (doubling on each failed probe, up to MaxCooldown), and the endpoint's
// deliveries are left pending, their attempts not spent. After the cooldown it is
// half-open: one delivery goes (the probe) and nothing else; success closes it, failure
// opens it again. Each worker process keeps its own breakers, so a fleet of n workers
// probes a dead receiver at most n times per cooldown.
type endpoint struct {
	waves     int // waves in flight (at most one)
	inflight  int
	failures  int       // consecutive failed attempts
	openUntil time.Time // zero: closed
	cooldown  time.Duration
	probing   bool // the half-open probe is in flight
}

// state names the breaker's state at now, for tests and logs.
func (e *endpoint) state(now time.Time) string {
	switch {
	case e.openUntil.IsZero():
		return "closed"
	case now.Before(e.openUntil):
		return "open"
	}
	return "half-open"
}

// admit reports whether one more delivery may start at now, and if so counts it.
func (e *endpoint) admit(now time.Time, maxInflight int) bool {
	switch e.state(now) {
	case "open":
		return false
	case "half-open":
		if e.probing || e.inflight > 0 {
			return false
		}
		e.probing = true
	default:
		if e.inflight >= maxInflight {
			return false
		}
	}
	e.inflight++
	return true
}

// done records an attempt's result.
func (e *endpoint) done(ok bool, now time.Time, c WorkerConfig) {
	e.inflight--
	probe := e.probing
	e.probing = false
	if ok {
		e.failures, e.openUntil, e.cooldown = 0, time.Time{}, 0
		return
	}
	e.failures++
	switch {
	case probe:
		e.cooldown = min(2*e.cooldown, c.MaxCooldown)
	case e.openUntil.IsZero() && e.failures >= c.BreakerThreshold:
		e.cooldown = c.Cooldown
	default:
		return
	}
	e.openUntil = now.Add(e.cooldown)
}

// blocked reports whether no delivery to this endpoint may start at now.
func (e *endpoint) blocked(now time.Time, maxInflight int) bool {
	switch e.state(now) {
	case "open":
		return true
	case "half-open":
		return e.probing || e.inflight > 0
	}
	return e.inflight >= maxInflight
}

// busy reports whether no wave to this endpoint may start at now: one is in flight, or
// its circuit keeps deliveries back.
func (e *endpoint) busy(now time.Time, maxInflight int) bool {
	return e.waves > 0 || e.blocked(now, maxInflight)
}
