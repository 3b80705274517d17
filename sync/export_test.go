package sync

// SetBeforeAck installs the hook that runs between a batch's write and its
// acknowledgement; returning false skips the acknowledgement.
func SetBeforeAck(o *SyncerOptions, f func() bool) { o.beforeAck = f }

// SetRebaseHook installs a function that runs just before a restore from MongoDB is
// written (nil removes it).
func SetRebaseHook(f func(sku string)) { rebaseHook = f }
