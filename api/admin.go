package api

import (
	"context"
	"time"

	"github.com/gofiber/fiber/v2"
)

// The admin routes besides the flash-sale simulation (simulation.go).

func (s *server) reconcileNow(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.UserContext()), 5*time.Minute)
	defer cancel()
	rep, err := s.rc.Run(ctx, true)
	if err != nil {
		return err
	}
	return c.JSON(rep)
}

func (s *server) lastReconcile(c *fiber.Ctx) error {
	rep, err := s.rc.LastReport(c.UserContext())
	if err != nil {
		return err
	}
	return c.JSON(rep)
}
