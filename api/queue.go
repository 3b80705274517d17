package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flashstock/flashstock/api/codes"
	"github.com/flashstock/flashstock/engine"
)

// headerQueuePass carries the waiting-room passes of a checkout or hold.
const headerQueuePass = "Queue-Pass"

// queuePass is the request's Queue-Pass header, copied: c.Get points into a buffer
// fasthttp reuses, and a checkout's batch may still be encoding it when a caller that
// gave up has returned.
func queuePass(c *fiber.Ctx) string { return strings.Clone(c.Get(headerQueuePass)) }

// queueView is a buyer's place in a waiting room, as the contract shows it.
type queueView struct {
	SKU                  string             `json:"sku"`
	Status               engine.QueueStatus `json:"status"`
	Position             int64              `json:"position"`
	EstimatedWaitSeconds int64              `json:"estimatedWaitSeconds"`
	Pass                 string             `json:"pass,omitempty"`
	PassExpiresAt        *time.Time         `json:"passExpiresAt,omitempty"`
}

func newQueueView(t engine.QueueTicket) queueView {
	v := queueView{SKU: t.SKU, Status: t.Status, Position: t.Position,
		EstimatedWaitSeconds: int64(t.EstimatedWait / time.Second)}
	if t.Status == engine.QueueAdmitted {
		v.Pass, v.PassExpiresAt = t.Pass, &t.PassExpiresAt
	}
	return v
}

// joinQueue puts the caller in a SKU's waiting room: 201 when this call did, 200 when
// they were there already (waiting, or admitted with an unused pass).
func (s *server) joinQueue(c *fiber.Ctx) error {
	sku, err := pathSKU(c)
	if err != nil {
		return err
	}
	t, err := s.inv.JoinQueue(c.UserContext(), sku, principal(c).UserID)
	if err != nil {
		return err
	}
	s.queueSeen(t)
	status := http.StatusOK
	if t.Joined {
		status = http.StatusCreated
	}
	return c.Status(status).JSON(newQueueView(t))
}

// queuePosition tells the caller where they stand; not in the queue is 404.
func (s *server) queuePosition(c *fiber.Ctx) error {
	sku, err := pathSKU(c)
	if err != nil {
		return err
	}
	t, err := s.inv.QueuePosition(c.UserContext(), sku, principal(c).UserID)
	if err != nil {
		return err
	}
	s.queueSeen(t)
	if t.Status == engine.QueueAbsent {
		return problemNotQueued
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	if t.Status == engine.QueueWaiting {
		// A hint for pollers: come back about when the wait may have changed.
		c.Set(fiber.HeaderRetryAfter, strconv.FormatInt(min(max(1, int64(t.EstimatedWait/time.Second)/10), 30), 10))
	}
	return c.JSON(newQueueView(t))
}

var problemNotQueued = problem(http.StatusNotFound, codes.NotFound, "you are not in this SKU's queue")

// queueSeen counts what a queue call did to the room: passes it issued and saw expire.
func (s *server) queueSeen(t engine.QueueTicket) {
	if s.m == nil {
		return
	}
	if t.Admitted > 0 {
		s.m.QueueAdmitted.WithLabelValues(t.SKU).Add(float64(t.Admitted))
	}
	if t.Expired > 0 {
		s.m.QueuePasses.WithLabelValues(t.SKU, "expired").Add(float64(t.Expired))
	}
}

// passesSpent counts the passes a checkout or hold spent.
func (s *server) passesSpent(skus []string) {
	if s.m == nil {
		return
	}
	for _, sku := range skus {
		s.m.QueuePasses.WithLabelValues(sku, "used").Inc()
	}
}
