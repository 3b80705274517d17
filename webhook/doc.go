// Package webhook sends flashstock's events out as signed webhooks (the Standard
// Webhooks scheme): event types and their derivation from the outbox (Derive),
// subscriptions with encrypted signing secrets (Service), the SSRF guard (Guard), and a
// delivery worker (Worker) that any number of processes run side by side.
//
// # Wiring
//
//	cfg, err := webhook.ConfigFromEnv(os.Getenv)      // WEBHOOK_* variables
//	svc, err := webhook.New(db, cfg)                   // db: the *mongo.Database
//	err = svc.EnsureIndexes(ctx)
//	m, err := webhook.NewMetrics(registry, svc)
//	w := webhook.NewWorker(svc, webhook.WorkerConfig{Metrics: m, Logger: logger})
//	go w.Run(ctx)                                      // returns after draining when ctx ends
//
// For each outbox event: events := webhook.Derive(webhook.Source{Event: e, Changes: ...},
// lowStockThreshold), then svc.Enqueue(ctx, events) before acknowledging the entry
// (Enqueue is idempotent, so a redelivered entry changes nothing).
//
// # Storage
//
// Every MongoDB write is a single-document operation keyed by _id (FerretDB-friendly, no
// transactions). Collections: webhook_subscriptions (the secret sealed, see Keyring),
// webhook_deliveries (one per event and subscription, _id "eventId.subscriptionId", so
// enqueueing the same event again changes nothing) and webhook_claims (leases).
//
// A worker takes an attempt by inserting a lease document (owner, expiry) under the _id
// "deliveryId#attempt#generation": an insert of one _id is atomic on every
// MongoDB-compatible server, while a conditional update is not on FerretDB (it reads,
// modifies and writes back, so two racing updates can both match). Only the lease
// holder writes the delivery document. A lease whose worker died expires (default 30 s)
// and is taken over by inserting the next generation; the receiver may then see the
// event twice, which the scheme allows (at least once; receivers dedupe by webhook-id).
//
// # Delivery
//
// POST of the event's body with webhook-id, webhook-timestamp and webhook-signature; a
// 2xx within Config.Timeout (10 s) is delivered; anything else (another status, a
// timeout, a refused address) is retried after RetrySchedule[n] plus jitter, and after
// the last retry the delivery is failed. Each worker runs at most
// WorkerConfig.MaxPerEndpoint requests per endpoint at once and keeps a circuit breaker
// per endpoint, so a slow or dead receiver holds up only its own deliveries. Order of
// delivery is not guaranteed.
//
// # Keys
//
// WEBHOOK_SECRET_KEY (32 bytes, `openssl rand -base64 32`) encrypts signing secrets with
// AES-256-GCM; see Keyring for the rotation.
package webhook
