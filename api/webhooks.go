package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flashstock/flashstock/api/codes"
	"github.com/flashstock/flashstock/webhook"
)

// The admin routes of webhook subscriptions (contract v1.1, "Webhooks"). Without a
// webhook service (no WEBHOOK_SECRET_KEY outside the embedded mode) they answer 503.

var errNoWebhooks = problem(http.StatusServiceUnavailable, codes.Unavailable,
	"webhooks are not configured on this server (WEBHOOK_SECRET_KEY)")

type subscriptionView struct {
	ID          string    `json:"id"`
	URL         string    `json:"url"`
	Events      []string  `json:"events"`
	Description string    `json:"description"`
	Secret      string    `json:"secret,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
}

func newSubscriptionView(s webhook.Subscription) subscriptionView {
	return subscriptionView{ID: s.ID, URL: s.URL, Events: s.Events, Description: s.Description, Secret: s.Secret,
		CreatedAt: s.CreatedAt}
}

type deliveryView struct {
	EventID       string     `json:"eventId"`
	Type          string     `json:"type"`
	Status        string     `json:"status"`
	Attempts      int        `json:"attempts"`
	LastStatus    int        `json:"lastStatus"`
	LastError     string     `json:"lastError"`
	NextAttemptAt *time.Time `json:"nextAttemptAt"`
	DeliveredAt   *time.Time `json:"deliveredAt"`
}

func (s *server) createWebhook(c *fiber.Ctx) error {
	if s.webhooks == nil {
		return errNoWebhooks
	}
	var in struct {
		URL         *string   `json:"url"`
		Events      *[]string `json:"events"`
		Description string    `json:"description"`
	}
	if _, err := decodeStrict(c.Body(), &in, false); err != nil {
		return err
	}
	switch {
	case in.URL == nil:
		return validation("url", "is required")
	case in.Events == nil || len(*in.Events) == 0:
		return validation("events", "at least one event type is required")
	}
	sub, err := s.webhooks.CreateSubscription(c.UserContext(),
		webhook.NewSubscription{URL: *in.URL, Events: *in.Events, Description: in.Description})
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(newSubscriptionView(sub))
}

func (s *server) listWebhooks(c *fiber.Ctx) error {
	if s.webhooks == nil {
		return errNoWebhooks
	}
	subs, err := s.webhooks.Subscriptions(c.UserContext())
	if err != nil {
		return err
	}
	items := make([]subscriptionView, len(subs))
	for i, sub := range subs {
		sub.Secret = "" // shown once, at creation
		items[i] = newSubscriptionView(sub)
	}
	return c.JSON(fiber.Map{"items": items})
}

func (s *server) deleteWebhook(c *fiber.Ctx) error {
	if s.webhooks == nil {
		return errNoWebhooks
	}
	if err := s.webhooks.DeleteSubscription(c.UserContext(), c.Params("id")); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

func (s *server) webhookDeliveries(c *fiber.Ctx) error {
	if s.webhooks == nil {
		return errNoWebhooks
	}
	limit := 50
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return validation("limit", "must be a whole number from 1 to 1000")
		}
		limit = n
	}
	ds, err := s.webhooks.Deliveries(c.UserContext(), c.Params("id"), limit)
	if err != nil {
		return err
	}
	items := make([]deliveryView, len(ds))
	for i, d := range ds {
		items[i] = deliveryView{EventID: d.EventID, Type: d.Type, Status: d.Status, Attempts: d.Attempts,
			LastStatus: d.LastStatus, LastError: d.LastError, NextAttemptAt: d.NextAttemptAt, DeliveredAt: d.DeliveredAt}
	}
	return c.JSON(fiber.Map{"items": items})
}
