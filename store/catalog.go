package store

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/flashstock/flashstock/engine"
)

// Product is a catalog entry. Live stock is not here: it lives in Redis.
type Product struct {
	SKU          string     `bson:"_id" json:"sku"`
	Name         string     `bson:"name" json:"name"`
	Description  string     `bson:"description" json:"description"`
	Price        int64      `bson:"price" json:"price"`
	Currency     string     `bson:"currency" json:"currency"`
	MaxPerUser   int64      `bson:"maxPerUser" json:"maxPerUser"`
	SaleStartsAt *time.Time `bson:"saleStartsAt" json:"saleStartsAt"`
	SaleEndsAt   *time.Time `bson:"saleEndsAt" json:"saleEndsAt"`
	// WaitingRoom is nil for a product that never had one (disabled).
	WaitingRoom *engine.WaitingRoom `bson:"waitingRoom,omitempty" json:"waitingRoom,omitempty"`
	// Group, given at creation, puts the SKU in its group's partition (engine.Product).
	Group     string    `bson:"group,omitempty" json:"group,omitempty"`
	CreatedAt time.Time `bson:"createdAt" json:"-"`
	UpdatedAt time.Time `bson:"updatedAt" json:"-"`
}

// EngineProduct is what the inventory engine keeps of p, with initial stock.
func (p Product) EngineProduct(stock int64) engine.Product {
	return engine.Product{SKU: p.SKU, Stock: stock, Price: p.Price, Currency: p.Currency,
		MaxPerUser: p.MaxPerUser, SaleStartsAt: p.SaleStartsAt, SaleEndsAt: p.SaleEndsAt, WaitingRoom: p.WaitingRoom,
		Group: p.Group}
}

// PutProduct creates or replaces a catalog entry.
func (s *Store) PutProduct(ctx context.Context, p Product) error {
	now := time.Now().UTC()
	if p.CreatedAt.IsZero() {
		p.CreatedAt = now
	}
	p.UpdatedAt = now
	_, err := s.products.ReplaceOne(ctx, bson.M{"_id": p.SKU}, p, options.Replace().SetUpsert(true))
	return dbErr("put product "+p.SKU, err)
}

// Product returns one catalog entry. Errors: engine.ErrNotFound.
func (s *Store) Product(ctx context.Context, sku string) (Product, error) {
	var p Product
	err := s.products.FindOne(ctx, bson.M{"_id": sku}).Decode(&p)
	return p, dbErr("product "+sku, err)
}

// Products lists catalog entries in SKU order, after the SKU cursor ("" = from the start).
func (s *Store) Products(ctx context.Context, after string, limit int) ([]Product, error) {
	filter := bson.M{}
	if after != "" {
		filter["_id"] = bson.M{"$gt": after}
	}
	cur, err := s.products.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetLimit(int64(limit)))
	if err != nil {
		return nil, dbErr("products", err)
	}
	out := []Product{}
	if err := cur.All(ctx, &out); err != nil {
		return nil, dbErr("products", err)
	}
	return out, nil
}
