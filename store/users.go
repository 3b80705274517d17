package store

import (
	"context"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/bson"
)

// User is an account. Its _id is the normalized email, which makes emails unique on any
// MongoDB-compatible server; ID is the stable user id that tokens carry.
type User struct {
	Email        string    `bson:"_id"`
	ID           string    `bson:"id"`
	Name         string    `bson:"name"`
	PasswordHash string    `bson:"passwordHash"`
	Role         string    `bson:"role"`
	CreatedAt    time.Time `bson:"createdAt"`
}

// NormalizeEmail is the form emails are stored and looked up in.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// CreateUser stores a new user. Errors: engine.ErrAlreadyExists if the email is taken.
func (s *Store) CreateUser(ctx context.Context, u User) error {
	u.Email = NormalizeEmail(u.Email)
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now().UTC()
	}
	_, err := s.users.InsertOne(ctx, u)
	return dbErr("create user", err)
}

// UserByEmail finds a user. Errors: engine.ErrNotFound.
func (s *Store) UserByEmail(ctx context.Context, email string) (User, error) {
	var u User
	err := s.users.FindOne(ctx, bson.M{"_id": NormalizeEmail(email)}).Decode(&u)
	return u, dbErr("user", err)
}

// CreateUsers stores users, skipping those whose email exists, and reports how many it
// created.
func (s *Store) CreateUsers(ctx context.Context, users []User) (int, error) {
	docs := make([]any, len(users))
	now := time.Now().UTC()
	for i, u := range users {
		u.Email = NormalizeEmail(u.Email)
		if u.CreatedAt.IsZero() {
			u.CreatedAt = now
		}
		docs[i] = u
	}
	dups, err := insertNew(ctx, s.users, docs)
	return len(users) - len(dups), dbErr("create users", err)
}
