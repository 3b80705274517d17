package api

import (
	_ "embed"

	"github.com/gofiber/fiber/v2"
	"github.com/swaggest/swgui/v5emb"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// openAPI is the contract as an OpenAPI 3 document. A test checks it is valid (examples
// included) and that it and the router name the same routes.
//
//go:embed openapi.json
var openAPI []byte

// mountDocs serves the document and Swagger UI, whose assets are compiled into the
// binary, so the page works offline.
func mountDocs(app *fiber.App) {
	app.Get("/api/openapi.json", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Send(openAPI)
	})
	ui := fasthttpadaptor.NewFastHTTPHandler(v5emb.New("flashstock API", "/api/openapi.json", "/api"))
	serve := func(c *fiber.Ctx) error { ui(c.Context()); return nil }
	app.Get("/api", serve)
	for _, asset := range []string{"/api/swagger-ui*", "/api/favicon-*", "/api/oauth2-redirect.html"} {
		app.Get(asset, serve)
	}
}
