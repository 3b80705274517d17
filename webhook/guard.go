package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"

	"github.com/flashstock/flashstock/engine"
)

// Resolver looks up a host's addresses; *net.Resolver is one.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// ErrRefusedAddress says a webhook URL leads to an address that is not allowed
// (loopback, private, link-local, ...).
var ErrRefusedAddress = errors.New("address not allowed")

// Guard keeps webhooks off internal networks. A URL is checked when a subscription is
// created (CheckURL), and the address every delivery actually connects to is checked
// again in the dialer (DNS can change between the two), so neither a rebinding name
// nor a redirect (never followed) reaches a refused address.
type Guard struct {
	AllowPrivate bool     // WEBHOOK_ALLOW_PRIVATE: allow every address (development, tests)
	Resolver     Resolver // nil: net.DefaultResolver
}

var refusedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network"
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),  // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"), // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),   // reserved, and broadcast
	netip.MustParsePrefix("64:ff9b:1::/48"),
}

// nat64 is the well-known NAT64 prefix: the IPv4 address inside is what is reached.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Refused reports why ip may not be a webhook target, or "" if it may.
func Refused(ip netip.Addr) string {
	ip = ip.Unmap()
	if nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsMulticast():
		return "multicast"
	}
	for _, p := range refusedPrefixes {
		if p.Contains(ip) {
			return "reserved (" + p.String() + ")"
		}
	}
	return ""
}

func (g Guard) resolver() Resolver {
	if g.Resolver != nil {
		return g.Resolver
	}
	return net.DefaultResolver
}

// CheckURL validates a subscription URL: http or https, a host, no credentials, and,
// unless AllowPrivate, every address the host resolves to allowed. Errors are
// *engine.ValidationError (field "url").
func (g Guard) CheckURL(ctx context.Context, raw string) error {
	bad := func(format string, a ...any) error {
		return &engine.ValidationError{Field: "url", Reason: fmt.Sprintf(format, a...)}
	}
	if len(raw) > 2048 {
		return bad("longer than 2048 characters")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return bad("scheme must be http or https")
	}
	if u.Hostname() == "" {
		return bad("no host")
	}
	if u.User != nil {
		return bad("credentials in the URL are not allowed")
	}
	if g.AllowPrivate {
		return nil
	}
	ips, err := g.lookup(ctx, u.Hostname())
	if err != nil {
		return bad("host %s does not resolve", u.Hostname())
	}
	for _, ip := range ips {
		if why := Refused(ip); why != "" {
			return bad("host %s resolves to a %s address (%s)", u.Hostname(), why, ip)
		}
	}
	return nil
}

func (g Guard) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	addrs, err := g.resolver().LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s: no addresses", host)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip)
		}
	}
	return out, nil
}

// DialContext connects to addr through the guard: the host is resolved with the
// guard's resolver, and each address is checked in the dialer's Control, on the
// address being connected to, before the connection is made.
func (g Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := g.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: 5 * time.Second, Control: g.control}
	var first error
	for _, ip := range ips {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

func (g Guard) control(_, address string, _ syscall.RawConn) error {
	if g.AllowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrRefusedAddress, address)
	}
	if why := Refused(ap.Addr()); why != "" {
		return fmt.Errorf("%w: %s is %s", ErrRefusedAddress, ap.Addr(), why)
	}
	return nil
}

// Client returns the HTTP client deliveries use: the guard's dialer, no proxy (one
// would dial on our behalf, past the check), no redirects, timeout per request.
func (g Guard) Client(timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           g.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
