package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testmongo"
	"github.com/flashstock/flashstock/internal/testredis"
	"github.com/flashstock/flashstock/store"
)

func TestMain(m *testing.M) { os.Exit(testmongo.Main(m)) }

// testDeps are a private redis-server and a fresh MongoDB database.
func testDeps(t *testing.T) *deps {
	t.Helper()
	_, rdb := testredis.Start(t)
	inv := engine.NewRedis(rdb, engine.Options{})
	t.Cleanup(inv.Close)
	st := store.New(testmongo.Database(t))
	if err := st.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &deps{rdb: rdb, inv: inv, st: st}
}

func adminHasPassword(t *testing.T, d *deps, password string) bool {
	t.Helper()
	u, err := d.st.UserByEmail(context.Background(), "admin@example.com")
	if err != nil {
		t.Fatal(err)
	}
	return bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) == nil
}

// Outside the embedded mode the demo admin gets DEMO_ADMIN_PASSWORD, never admin12345,
// and the log never shows it; an admin left on admin12345 stops the seeding.
func TestSeedGivesTheDemoAdminTheOperatorsPassword(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))

	d := testDeps(t)
	if err := seedDemo(ctx, d, log, "operator-chosen-pw"); err != nil {
		t.Fatal(err)
	}
	if !adminHasPassword(t, d, "operator-chosen-pw") || adminHasPassword(t, d, "admin12345") {
		t.Fatal("the demo admin does not have DEMO_ADMIN_PASSWORD alone")
	}
	if strings.Contains(logs.String(), "operator-chosen-pw") {
		t.Fatalf("the log shows the admin password:\n%s", logs.String())
	}
	// Seeding again (a restart) is fine.
	if err := seedDemo(ctx, d, log, "operator-chosen-pw"); err != nil {
		t.Fatalf("second seed: %v", err)
	}

	// A database the embedded mode (or an older version) seeded with admin12345.
	old := testDeps(t)
	if err := seedDemo(ctx, old, log, embeddedAdminPassword); err != nil {
		t.Fatal(err)
	}
	err := seedDemo(ctx, old, log, "operator-chosen-pw")
	if err == nil || !strings.Contains(err.Error(), "admin12345") {
		t.Fatalf("seeding over an admin with the published password: got %v, want a refusal", err)
	}
	// Without seeding (SEED_DEMO=false after an upgrade), start-up still finds it.
	if err := refusePublishedAdmin(ctx, old); err == nil {
		t.Fatal("an admin with the published password passes the start-up check")
	}
	if err := refusePublishedAdmin(ctx, d); err != nil {
		t.Fatalf("an admin with the operator's password: %v", err)
	}
	if err := refusePublishedAdmin(ctx, testDeps(t)); err != nil {
		t.Fatalf("no demo admin at all: %v", err)
	}
}
