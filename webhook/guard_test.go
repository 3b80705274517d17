package webhook_test

import (
	"context"
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testmongo"
	"github.com/flashstock/flashstock/webhook"
)

func TestRefusedAddresses(t *testing.T) {
	for _, tc := range []struct {
		ip      string
		refused bool
	}{
		{"127.0.0.1", true}, {"127.9.9.9", true}, {"::1", true},
		{"10.1.2.3", true}, {"172.16.0.1", true}, {"172.31.255.255", true}, {"192.168.1.1", true},
		{"fc00::1", true}, {"fd12:3456::1", true},
		{"169.254.169.254", true}, {"fe80::1", true},
		{"0.0.0.0", true}, {"::", true},
		{"224.0.0.1", true}, {"ff02::1", true},
		{"100.64.0.1", true}, {"100.127.255.255", true},
		{"::ffff:127.0.0.1", true}, {"::ffff:10.0.0.1", true}, {"64:ff9b::a00:1", true},
		{"255.255.255.255", true},
		{"93.184.216.34", false}, {"8.8.8.8", false}, {"172.32.0.1", false}, {"100.128.0.1", false},
		{"2606:4700::1111", false}, {"::ffff:8.8.8.8", false},
	} {
		if got := webhook.Refused(netip.MustParseAddr(tc.ip)) != ""; got != tc.refused {
			t.Errorf("%s: refused %v, want %v", tc.ip, got, tc.refused)
		}
	}
}

func TestCreationRefusesInternalTargets(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	res := &mapResolver{addrs: map[string]string{"public.example": "93.184.216.34", "internal.example": "10.0.0.7",
		"meta.example": "169.254.169.254", "localhost": "127.0.0.1"}}
	cfg := testConfig(t, clk)
	cfg.Guard = webhook.Guard{Resolver: res}
	s := mustService(t, testmongo.Database(t), cfg)
	for _, u := range []string{
		"http://127.0.0.1:8080/hook", "http://[::1]/", "http://localhost/", "http://10.0.0.1/", "http://192.168.0.10/",
		"http://172.20.0.1/", "http://[fd00::1]/", "http://169.254.169.254/latest/meta-data", "http://[fe80::1]/",
		"http://0.0.0.0/", "http://100.64.0.1/", "http://224.0.0.1/", "https://internal.example/", "https://meta.example/",
		"https://unknown.example/",
	} {
		_, err := s.CreateSubscription(ctx, webhook.NewSubscription{URL: u, Events: []string{webhook.SoldOut}})
		if !errors.Is(err, engine.ErrInvalid) {
			t.Errorf("%s: got %v, want a validation error", u, err)
		}
	}
	for _, u := range []string{"https://public.example/hook", "http://93.184.216.34:8080/"} {
		if _, err := s.CreateSubscription(ctx, webhook.NewSubscription{URL: u, Events: []string{webhook.SoldOut}}); err != nil {
			t.Errorf("%s: got %v, want it accepted", u, err)
		}
	}
	// The same private URL is fine when private targets are allowed.
	cfg.Guard.AllowPrivate = true
	if _, err := mustService(t, testmongo.Database(t), cfg).CreateSubscription(ctx,
		webhook.NewSubscription{URL: "http://127.0.0.1:8080/", Events: []string{webhook.SoldOut}}); err != nil {
		t.Fatalf("allowPrivate: got %v", err)
	}
}

// A name that was public when the subscription was created and resolves to loopback
// when the delivery is made is refused at the dial: the receiver never sees a request.
// The same setup with private targets allowed delivers, so the refusal is the guard's.
func TestDeliveryRefusesANameThatNowResolvesToLoopback(t *testing.T) {
	for _, allow := range []bool{false, true} {
		clk := newClock()
		r := newReceiver(t, clk, nil)
		port := must(url.Parse(r.srv.URL)).Port()
		res := &mapResolver{addrs: map[string]string{"hooks.example": "93.184.216.34"}}
		cfg := testConfig(t, clk)
		cfg.Guard = webhook.Guard{Resolver: res, AllowPrivate: allow}
		s := mustService(t, testmongo.Database(t), cfg)
		sub := mustSubscribe(t, s, "http://hooks.example:"+port+"/hook")
		r.setSecret(sub.Secret)
		res.set("hooks.example", "127.0.0.1") // DNS rebinding
		mustEnqueue(t, s, orderEvents(clk, 1)...)
		w := webhook.NewWorker(s, webhook.WorkerConfig{})
		if n := round(t, w); n != 1 {
			t.Fatalf("allow %v: started %d, want 1", allow, n)
		}
		d := mustDeliveries(t, s, sub.ID)[orderEvents(clk, 1)[0].ID]
		if !allow {
			if r.total() != 0 || d.Status != webhook.StatusPending || !strings.Contains(d.LastError, webhook.ErrRefusedAddress.Error()) {
				t.Fatalf("refused: receiver saw %d requests, delivery %+v; want none and a pending delivery refused", r.total(), d)
			}
		} else if r.total() != 1 || d.Status != webhook.StatusDelivered {
			t.Fatalf("allowed: receiver saw %d requests, delivery %+v; want one, delivered", r.total(), d)
		}
	}
}

// An IP-literal loopback URL stored by a process that allowed it (or written to the
// database directly) is refused at delivery by one that does not.
func TestDeliveryRefusesLoopbackLiterals(t *testing.T) {
	clk := newClock()
	db := testmongo.Database(t)
	r := newReceiver(t, clk, nil)
	cfg := testConfig(t, clk)
	sub := mustSubscribe(t, mustService(t, db, cfg), r.URL())
	r.setSecret(sub.Secret)
	cfg.Guard.AllowPrivate = false
	strict := mustService(t, db, cfg)
	mustEnqueue(t, strict, orderEvents(clk, 1)...)
	round(t, webhook.NewWorker(strict, webhook.WorkerConfig{}))
	d := mustDeliveries(t, strict, sub.ID)[orderEvents(clk, 1)[0].ID]
	if r.total() != 0 || d.Status != webhook.StatusPending || !strings.Contains(d.LastError, webhook.ErrRefusedAddress.Error()) {
		t.Fatalf("receiver on loopback saw %d requests, delivery %+v; want 0 and the attempt refused by the guard", r.total(), d)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
