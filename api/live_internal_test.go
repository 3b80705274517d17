package api

import (
	"log/slog"
	"strconv"
	"testing"
	"time"
)

// A subscriber that stops reading is dropped once its buffer is full; publishing never
// waits for it, and one that keeps up gets every message.
func TestLiveHubDropsSlowSubscribers(t *testing.T) {
	h := newLiveHub(nil, nil, nil, &liveCounters{}, slog.New(slog.DiscardHandler), time.Now)
	add := func() *liveSub {
		sub := &liveSub{ch: make(chan liveMsg, liveBuffer), dropped: make(chan struct{})}
		h.subs[sub] = struct{}{}
		return sub
	}
	slow, fast := add(), add()
	for i := range 3 * liveBuffer {
		h.publish(liveMsg{event: "order.confirmed", id: strconv.Itoa(i)})
		select {
		case m := <-fast.ch:
			if m.id != strconv.Itoa(i) {
				t.Fatalf("fast subscriber: got message %s, want %d", m.id, i)
			}
		default:
			t.Fatalf("fast subscriber: message %d was not delivered", i)
		}
	}
	select {
	case <-slow.dropped:
	default:
		t.Fatal("the slow subscriber was not dropped")
	}
	if len(slow.ch) != liveBuffer {
		t.Errorf("slow subscriber's buffer: got %d, want the first %d messages", len(slow.ch), liveBuffer)
	}
	if _, ok := h.subs[slow]; ok || len(h.subs) != 1 {
		t.Fatalf("subscribers: got %d (slow still in: %v), want only the fast one", len(h.subs), ok)
	}
}
