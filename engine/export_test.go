package engine

import "time"

// SoldOutMarked reports whether r holds a live sold-out mark on sku.
func SoldOutMarked(r *Redis, sku string) bool {
	s := r.soldOut
	if s == nil {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.until[sku]
	return ok && time.Now().UnixNano() < t
}
