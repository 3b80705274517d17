package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/flashstock/flashstock/api"
	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/store"
)

var demoProducts = []store.Product{
	{SKU: "TOOTHPASTE", Name: "Toothpaste", Description: "Mint, 100 ml", Price: 399, Currency: "USD"},
	{SKU: "SOUND-SYSTEM", Name: "Sound System", Description: "2.1 speakers", Price: 29999, Currency: "USD"},
	{SKU: "TV", Name: "TV", Description: "55 inch 4K", Price: 49999, Currency: "USD"},
	{SKU: "APPLE", Name: "Apple", Description: "One crisp apple", Price: 99, Currency: "USD"},
	{SKU: "T-SHIRT", Name: "T-shirt", Description: "Cotton, one size", Price: 1999, Currency: "USD"},
}

const demoCustomers = 1000

// seedDemo writes the contract's demo data, the admin with adminPassword; it is
// idempotent and leaves existing users and stock alone. adminPassword is admin12345
// only in the embedded mode (see Config.DemoAdminPassword).
func seedDemo(ctx context.Context, d *deps, log *slog.Logger, adminPassword string) error {
	start := time.Now()
	if adminPassword == "" {
		return errors.New("seed: no demo admin password")
	}
	// One hash for the shared customer password, not a thousand.
	adminHash, err := bcrypt.GenerateFromPassword([]byte(adminPassword), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	customerHash, err := bcrypt.GenerateFromPassword([]byte("customer12345"), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	users := make([]store.User, 0, demoCustomers+1)
	users = append(users, store.User{Email: "admin@example.com", ID: "admin", Name: "Admin", PasswordHash: string(adminHash), Role: api.RoleAdmin})
	for i := 1; i <= demoCustomers; i++ {
		users = append(users, store.User{Email: fmt.Sprintf("customer%d@example.com", i), ID: fmt.Sprintf("customer%d", i),
			Name: fmt.Sprintf("Customer %d", i), PasswordHash: string(customerHash), Role: api.RoleCustomer})
	}
	created, err := d.st.CreateUsers(ctx, users)
	if err != nil {
		return fmt.Errorf("seed users: %w", err)
	}
	if adminPassword != embeddedAdminPassword {
		if err := refusePublishedAdmin(ctx, d); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	products := 0
	for _, p := range demoProducts {
		_, err := d.inv.CreateProduct(ctx, p.EngineProduct(20))
		if errors.Is(err, engine.ErrAlreadyExists) {
			continue
		}
		if err != nil {
			return fmt.Errorf("seed %s: %w", p.SKU, err)
		}
		if err := d.st.PutProduct(ctx, p); err != nil {
			return fmt.Errorf("seed %s: %w", p.SKU, err)
		}
		products++
	}
	shown := "(DEMO_ADMIN_PASSWORD)"
	if adminPassword == embeddedAdminPassword {
		shown = embeddedAdminPassword
	}
	log.Info("demo data seeded", "users_created", created, "products_created", products,
		"admin", "admin@example.com / "+shown, "customers", "customer1..1000@example.com / customer12345",
		"ms", time.Since(start).Milliseconds())
	return nil
}

// refusePublishedAdmin fails when admin@example.com still has the published demo
// password: an admin seeded by the embedded mode on the same MongoDB, or by an older
// version whose compose file seeded by default. Every start outside the embedded mode
// checks, whether or not it seeds, so an upgrade cannot keep that door open unnoticed.
func refusePublishedAdmin(ctx context.Context, d *deps) error {
	u, err := d.st.UserByEmail(ctx, "admin@example.com")
	if errors.Is(err, engine.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the demo admin: %w", err)
	}
	if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(embeddedAdminPassword)) == nil {
		return errors.New(`admin@example.com exists with the published password admin12345; ` +
			`delete it (db.users.deleteOne({_id: "admin@example.com"})), or seed it with DEMO_ADMIN_PASSWORD after deleting it, and start again`)
	}
	return nil
}
