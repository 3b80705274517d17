package api

import (
	_ "embed"

	"github.com/gofiber/fiber/v2"
)

// dashboardHTML is the live dashboard: one page, its script and styles inline, nothing
// loaded from elsewhere, so it works offline. It asks an admin to log in, then reads
// GET /api/v1/admin/live with the token as ?token= (EventSource sends no headers).
//
//go:embed dashboard/dashboard.html
var dashboardHTML []byte

// dashboardCSP keeps the page to itself: inline script and styles, requests to this
// origin only.
const dashboardCSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " +
	"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func dashboard(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	c.Set(fiber.HeaderContentSecurityPolicy, dashboardCSP)
	c.Set(fiber.HeaderCacheControl, "no-cache")
	return c.Send(dashboardHTML)
}
