package api_test

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/flashstock/flashstock/api"
	"github.com/flashstock/flashstock/webhook"
)

func TestWebhookRoutes(t *testing.T) {
	h := newHarness(t, api.Config{})
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keys, err := webhook.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := webhook.New(h.st.Database(), webhook.Config{Keys: keys}) // loopback and private refused
	if err != nil {
		t.Fatal(err)
	}
	h.app = api.New(h.cfg, api.Deps{Inv: h.inv, Store: h.st, Webhooks: svc})
	admin, customer := token(t, "root", api.RoleAdmin), token(t, "c1", api.RoleCustomer)

	want(t, h.do(t, "POST", "/api/v1/admin/webhooks", customer, `{"url":"https://93.184.216.34/h","events":["order.confirmed"]}`), 403, "forbidden")
	for name, body := range map[string]string{
		"loopback":      `{"url":"http://127.0.0.1:9/h","events":["order.confirmed"]}`,
		"private":       `{"url":"http://10.1.2.3/h","events":["order.confirmed"]}`,
		"link-local":    `{"url":"http://169.254.169.254/latest","events":["order.confirmed"]}`,
		"not http":      `{"url":"ftp://93.184.216.34/h","events":["order.confirmed"]}`,
		"no events":     `{"url":"https://93.184.216.34/h","events":[]}`,
		"unknown event": `{"url":"https://93.184.216.34/h","events":["order.shipped"]}`,
		"unknown field": `{"url":"https://93.184.216.34/h","events":["order.confirmed"],"x":1}`,
		"no url at all": `{"events":["order.confirmed"]}`,
	} {
		t.Run(name, func(t *testing.T) {
			want(t, h.do(t, "POST", "/api/v1/admin/webhooks", admin, body), 400, "validation_failed")
		})
	}

	r := h.do(t, "POST", "/api/v1/admin/webhooks", admin, `{"url":"https://93.184.216.34/h","events":["order.confirmed"],"description":"shop"}`)
	want(t, r, 201, "")
	created := r.json(t)
	id, _ := created["id"].(string)
	if secret, _ := created["secret"].(string); !strings.HasPrefix(secret, "whsec_") || id == "" {
		t.Fatalf("created: %s", r.body)
	}
	r = h.do(t, "GET", "/api/v1/admin/webhooks", admin, "")
	want(t, r, 200, "")
	if strings.Contains(string(r.body), "whsec_") || !strings.Contains(string(r.body), id) {
		t.Fatalf("list: %s; want the subscription without its secret", r.body)
	}
	if err := svc.Enqueue(context.Background(), []webhook.Event{{ID: "evt_1", Type: webhook.OrderConfirmed,
		At: time.Now(), Data: map[string]string{"id": "o1"}}}); err != nil {
		t.Fatal(err)
	}
	r = h.do(t, "GET", "/api/v1/admin/webhooks/"+id+"/deliveries?limit=10", admin, "")
	want(t, r, 200, "")
	items, _ := r.json(t)["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["status"] != "pending" || items[0].(map[string]any)["eventId"] != "evt_1" {
		t.Fatalf("deliveries: %s", r.body)
	}
	want(t, h.do(t, "GET", "/api/v1/admin/webhooks/"+id+"/deliveries?limit=0", admin, ""), 400, "validation_failed")
	want(t, h.do(t, "DELETE", "/api/v1/admin/webhooks/"+id, admin, ""), 204, "")
	want(t, h.do(t, "DELETE", "/api/v1/admin/webhooks/"+id, admin, ""), 404, "not_found")

	// Without a webhook service: 503, nothing else.
	off := newHarness(t, api.Config{})
	want(t, off.do(t, "GET", "/api/v1/admin/webhooks", admin, ""), 503, "unavailable")
}
