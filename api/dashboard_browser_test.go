package api_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/flashstock/flashstock/api"
	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/store"
)

// chromium finds Debian's chromium (`make chromium` installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: run `make chromium` (Debian package chromium)")
	return ""
}

// browser starts a headless chromium with a fresh profile, for this test only. The
// flags keep it from reaching for the network, which on an offline machine stalls it.
func browser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// mustAdmin creates an admin who can log in with password.
func mustAdmin(t *testing.T, h *harness, email, password string) {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	u := store.User{Email: email, ID: engine.NewID(), Name: "Admin", PasswordHash: string(hash), Role: api.RoleAdmin}
	if err := h.st.CreateUser(context.Background(), u); err != nil {
		t.Fatal(err)
	}
}

// A person opens the dashboard in a real browser, logs in, runs a simulation and sees
// the SKU's figures become the inventory API's.
func TestDashboardInABrowser(t *testing.T) {
	h := newHarness(t, api.Config{})
	mustAdmin(t, h, "admin@example.com", "admin12345")
	h.product(t, "TV", 40, "")
	h.product(t, "RADIO", 10, "")
	start := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	h.product(t, "DROP", 5, `,"saleStartsAt":"`+start+`","waitingRoom":{"enabled":true,"admitPerMinute":60}`)
	for _, u := range []string{"a", "b"} {
		want(t, h.do(t, "POST", "/api/v1/queue/DROP", token(t, u, api.RoleCustomer), ""), 201, "")
	}
	base, _ := h.listen(t)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	b := browser(t, ctx)

	row := func(field string) chromedp.CSS { return chromedp.CSS(`tr[data-sku="TV"] .` + field) }
	err := chromedp.Do(b,
		chromedp.Navigate(base+"/dashboard"),
		chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.SendKeys(chromedp.ID("email"), "admin@example.com"),
		chromedp.SendKeys(chromedp.ID("password"), "admin12345"),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-sku="TV"]`)),
	)
	if err != nil {
		t.Fatalf("log in and see the stock: %v", err)
	}
	if before, err := chromedp.Run(b, chromedp.Text(row("available"))); err != nil || before != "40" {
		t.Fatalf("TV available before the run: page shows %q (%v), want 40", before, err)
	}
	// The queue column: buyers waiting in DROP's room, a dash for TV (no room).
	waiting, err := chromedp.Run(b, chromedp.Text(chromedp.CSS(`tr[data-sku="DROP"] .waiting`)))
	none, err2 := chromedp.Run(b, chromedp.Text(row("waiting")))
	if err != nil || err2 != nil || waiting != "2" || none != "–" {
		t.Fatalf("waiting column: DROP %q, TV %q (%v, %v); want 2 and –", waiting, none, err, err2)
	}

	err = chromedp.Do(b,
		chromedp.SetValue(chromedp.ID("sim-sku"), "TV"),
		chromedp.SetValue(chromedp.ID("sim-buyers"), "100"),
		chromedp.SetValue(chromedp.ID("sim-conc"), "8"),
		chromedp.Click(chromedp.ID("sim-run")),
	)
	if err != nil {
		t.Fatalf("start the simulation from the page: %v", err)
	}
	if _, err := chromedp.Run(b, chromedp.Poll[bool](`document.getElementById("sim-report").textContent.startsWith("done:")`,
		chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		t.Fatalf("the simulation's report never showed: %v", err)
	}
	report, _ := chromedp.Run(b, chromedp.Text(chromedp.ID("sim-report")))
	t.Logf("simulation: %s", report)

	lv := h.do(t, "GET", "/api/v1/inventory/TV", token(t, "any", api.RoleCustomer), "").json(t)
	if lv["sold"] != float64(40) || lv["available"] != float64(0) {
		t.Fatalf("after 100 buyers of 40 units the API shows %v, want all 40 sold", lv)
	}
	// The page catches up with the next snapshot.
	match := fmt.Sprintf(`(function () {
		var row = document.querySelector('tr[data-sku="TV"]');
		return !!row && row.querySelector(".available").textContent === "%d" &&
			row.querySelector(".reserved").textContent === "%d" && row.querySelector(".sold").textContent === "%d";
	})()`, int64(lv["available"].(float64)), int64(lv["reserved"].(float64)), int64(lv["sold"].(float64)))
	if _, err := chromedp.Run(b, chromedp.Poll[bool](match, chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		t.Fatalf("the page's TV figures never became the API's %v: %v", lv, err)
	}
	if _, err := chromedp.Run(b, chromedp.Poll[bool](`document.querySelectorAll("#events li.t-order\\.confirmed").length > 0`,
		chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		t.Fatalf("no order.confirmed in the page's recent events: %v", err)
	}
	events, err := chromedp.Run(b, chromedp.Evaluate[int](`document.querySelectorAll("#events li").length`))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(b, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.TempDir(), "dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d recent events listed; screenshot %s (%d bytes)", events, path, len(shot))
}
