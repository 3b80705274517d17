package sync

// SetBeforeAck installs the hook that runs between a batch's write and its
// acknowledgement; returning false skips the acknowledgement.
func SetBeforeAck(o *SyncerOptions, f func() bool) { o.beforeAck = f }
