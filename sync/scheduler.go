package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/store"
)

// Job is a scheduled task.
type Job struct {
	Name string
	// Spec is a cron spec with seconds: "*/10 * * * * *" is every ten seconds.
	Spec string
	Run  func(ctx context.Context) error
	// Timeout bounds one run and is the lifetime of its lock (default 5 min).
	Timeout time.Duration
}

// Specs are the schedules of the standard jobs.
type Specs struct {
	HoldExpiry string // default every second, so expired units return within about 1 s
	Snapshot   string // default every minute
	Reconcile  string // default every 5 minutes
	Trim       string // default every 10 seconds
}

// DefaultSpecs are the standard schedules.
var DefaultSpecs = Specs{
	HoldExpiry: "* * * * * *",
	Snapshot:   "0 * * * * *",
	Reconcile:  "0 */5 * * * *",
	Trim:       "*/10 * * * * *",
}

var specParser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ValidateSpec reports whether spec is a cron spec with seconds.
func ValidateSpec(spec string) error {
	_, err := specParser.Parse(spec)
	return err
}

// StandardJobs are flashstock's scheduled jobs: hold expiry, stock snapshot,
// reconciliation (report only; repairs are an operator's call) and outbox trim.
// onExpired, if set, hears how many holds each sweep expired.
func StandardJobs(inv *engine.Redis, st *store.Store, sy *Syncer, rc *Reconciler, specs Specs, onExpired func(int)) []Job {
	return []Job{
		{Name: "hold-expiry", Spec: specs.HoldExpiry, Timeout: 30 * time.Second, Run: func(ctx context.Context) error {
			for {
				n, err := inv.ExpireHolds(ctx, 500)
				if onExpired != nil && n > 0 {
					onExpired(n)
				}
				if err != nil || n < 500 {
					return err
				}
			}
		}},
		{Name: "snapshot", Spec: specs.Snapshot, Run: func(ctx context.Context) error {
			return Snapshot(ctx, inv, st, time.Now())
		}},
		{Name: "reconcile", Spec: specs.Reconcile, Run: func(ctx context.Context) error {
			_, err := rc.Run(ctx, false)
			return err
		}},
		{Name: "outbox-trim", Spec: specs.Trim, Timeout: 30 * time.Second, Run: func(ctx context.Context) error {
			_, err := sy.Trim(ctx)
			return err
		}},
	}
}

// Snapshot stores every SKU's live levels in MongoDB.
func Snapshot(ctx context.Context, inv *engine.Redis, st *store.Store, at time.Time) error {
	skus, err := inv.SKUs(ctx)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	for len(skus) > 0 {
		n := min(len(skus), 500)
		levels, err := inv.Levels(ctx, skus[:n])
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		if err := st.SaveSnapshots(ctx, levels, at); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		skus = skus[n:]
	}
	return nil
}

// Scheduler runs jobs on their cron schedules. Any number of processes may run the same
// jobs: a tick is claimed in Redis, so each tick of a job runs in one process, and a run
// holds a lock (random token, TTL, released only by its owner) so runs never overlap.
type Scheduler struct {
	id   string // names this scheduler in the tick claims it makes
	rdb  redis.UniversalClient
	keys engine.Keys
	cron *cron.Cron
	jobs []Job
	log  *slog.Logger
}

// NewScheduler checks the jobs' specs and returns a scheduler for them.
func NewScheduler(rdb redis.UniversalClient, keys engine.Keys, log *slog.Logger, jobs ...Job) (*Scheduler, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Scheduler{id: engine.NewID(), rdb: rdb, keys: keys, jobs: jobs, log: log.With("component", "scheduler"),
		cron: cron.New(cron.WithParser(specParser))}
	for _, j := range jobs {
		if _, err := specParser.Parse(j.Spec); err != nil {
			return nil, fmt.Errorf("job %s: spec %q: %w", j.Name, j.Spec, err)
		}
	}
	return s, nil
}

// Start runs the schedule until ctx ends; then it waits for runs in progress.
func (s *Scheduler) Start(ctx context.Context) {
	for _, j := range s.jobs {
		s.cron.AddFunc(j.Spec, func() {
			if _, err := s.RunTick(ctx, j, time.Now()); err != nil && ctx.Err() == nil {
				s.log.Error("job failed", "job", j.Name, "err", err)
			}
		})
	}
	s.cron.Start()
	<-ctx.Done()
	<-s.cron.Stop().Done()
}

// RunTick runs job j for the tick at `at` (rounded to the second, so processes whose
// clocks differ by less than half a second agree on the tick), unless another process
// has claimed that tick or a run of j is still going. It reports whether it ran j.
func (s *Scheduler) RunTick(ctx context.Context, j Job, at time.Time) (bool, error) {
	tick := at.Round(time.Second).Unix()
	claimed, err := claim(ctx, s.rdb, s.keys.Job(j.Name, "tick:"+strconv.FormatInt(tick, 10)), s.id, 10*time.Minute)
	if err != nil || !claimed {
		return false, err
	}
	timeout := j.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	lock, err := Acquire(ctx, s.rdb, s.keys.Job(j.Name, "lock"), timeout)
	if errors.Is(err, ErrLocked) {
		s.log.Info("job skipped: the previous run is still going", "job", j.Name)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer lock.Release(context.WithoutCancel(ctx))
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return true, j.Run(rctx)
}

// ErrLocked says a lock is held by someone else.
var ErrLocked = errors.New("locked")

// Lock is a Redis lock held with a random token.
type Lock struct {
	rdb   redis.UniversalClient
	key   string
	token string
}

var claimScript = redis.NewScript(`
-- Claim KEYS[1] for the claimant ARGV[1] for ARGV[2] ms, unless someone else has it.
-- A claimant that finds its own value owns the key: re-sending a claim whose reply was
-- lost is safe.
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then return 1 end
return 0`)

// claimSends is how often a claim is sent when its reply is lost. The client never
// re-sends on its own (engine.NoRetries); a claim is safe to send again, since its
// value names the claimant.
const claimSends = 3

// claim takes key for value unless another value holds it; it reports whether value
// holds it now.
func claim(ctx context.Context, rdb redis.UniversalClient, key, value string, ttl time.Duration) (bool, error) {
	var err error
	for range claimSends {
		var n int64
		n, err = claimScript.Run(ctx, rdb, []string{key}, value, ttl.Milliseconds()).Int64()
		if err == nil {
			return n == 1, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return false, fmt.Errorf("claim %s: %w", key, err)
}

var releaseScript = redis.NewScript(`
-- Delete KEYS[1] only if it still holds our token ARGV[1]: a lock that expired and was
-- taken by another process is theirs, not ours to release.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// Acquire takes the lock at key for ttl. A lost reply is re-sent (the token names the
// holder, so a re-sent acquire that finds its own token holds the lock).
// Errors: ErrLocked.
func Acquire(ctx context.Context, rdb redis.UniversalClient, key string, ttl time.Duration) (*Lock, error) {
	token := engine.NewID()
	ok, err := claim(ctx, rdb, key, token, ttl)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if !ok {
		return nil, ErrLocked
	}
	return &Lock{rdb: rdb, key: key, token: token}, nil
}

// Release gives the lock back if this holder still owns it. Compare-and-delete is safe
// to send again, so a lost reply is re-sent: a lock left behind would skip the job's
// ticks until it expires.
func (l *Lock) Release(ctx context.Context) error {
	var err error
	for range claimSends {
		if err = releaseScript.Run(ctx, l.rdb, []string{l.key}, l.token).Err(); err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("release lock %s: %w", l.key, err)
	}
	return nil
}
