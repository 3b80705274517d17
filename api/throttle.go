package api

import (
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flashstock/flashstock/engine"
)

// Limiter scopes (engine.Throttle): one per client address for every login and register
// request, one per email for failed logins and for registrations.
const (
	scopeAuthAddress = "auth-addr"
	scopeAuthEmail   = "auth-email"
)

// addressLimit and emailLimit are the login limits of contract v1.1, over LoginWindow.
func (s *server) addressLimit() engine.Limit {
	return engine.Limit{Burst: s.cfg.LoginAddressLimit, Per: s.cfg.LoginWindow}
}

func (s *server) emailLimit() engine.Limit {
	return engine.Limit{Burst: s.cfg.LoginLimit, Per: s.cfg.LoginWindow}
}

// throttleAddress counts one auth request against the caller's address.
func (s *server) throttleAddress(c *fiber.Ctx) error {
	return s.inv.Throttle(c.UserContext(), scopeAuthAddress, s.clientAddress(c), s.addressLimit())
}

// clientAddress is who the request comes from, for limits: the peer's address, or, when
// the peer is a trusted proxy, the nearest address in X-Forwarded-For that is not one
// (read from the right: a client can put anything on the left). An IPv6 client is its
// /64, the block one host usually has to itself.
func (s *server) clientAddress(c *fiber.Ctx) string {
	peer := addrOf(c.Context().RemoteIP())
	if len(s.cfg.TrustedProxies) > 0 && s.trusted(peer) {
		hops := strings.Split(strings.Join(headerValues(c, fiber.HeaderXForwardedFor), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, ok := parseHop(hops[i])
			if !ok {
				break // a garbled hop: trust nothing to its left
			}
			peer = a.Unmap()
			if !s.trusted(peer) {
				break
			}
		}
	}
	if peer.Is6() {
		p, _ := peer.Prefix(64)
		return p.String()
	}
	return peer.String()
}

// parseHop reads one X-Forwarded-For entry: an address, or an address and port (some
// proxies add the port: 192.0.2.1:5555, [2001:db8::1]:443).
func parseHop(h string) (netip.Addr, bool) {
	h = strings.TrimSpace(h)
	if a, err := netip.ParseAddr(h); err == nil {
		return a, true
	}
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr(), true
	}
	return netip.Addr{}, false
}

func (s *server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func headerValues(c *fiber.Ctx, name string) []string {
	var out []string
	for _, v := range c.Request().Header.PeekAll(name) {
		out = append(out, string(v))
	}
	return out
}

// defaultLoginWindow is the period of the login limits: per minute, as the contract says.
const defaultLoginWindow = time.Minute
