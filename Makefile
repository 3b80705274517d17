# flashstock — everyday commands. `make run` serves on embedded defaults; `make test` runs
# every test (unit, real redis-server, embedded FerretDB).

GO      ?= go
PKGS    ?= ./...
BENCH   ?= .
TIMEOUT ?= 15m

.PHONY: all build run test test-race bench bench-go bench-deps bench-ratio lint check-alerts fmt deps chromium \
        cluster-up cluster-down check-compose check-dashboards

all: lint test

build:
	$(GO) build -o bin/flashstock ./cmd/flashstock

run:
	$(GO) run ./cmd/flashstock serve

# Tests start their own redis-server processes on free loopback ports; `deps` makes sure
# the binary is there (Debian package redis-server) without touching any running Redis.
# The dashboard's browser test drives a headless chromium (`chromium`).
test: deps chromium
	$(GO) test -count=1 -timeout $(TIMEOUT) $(PKGS)

test-race: deps chromium
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)

# The measured suite behind docs/BENCHMARKS.md, in one run (about 4 minutes): the
# ceilings, the seed-style baseline, the engine, the server over HTTP (this tool and
# wrk), sold-out storms with and without SOLDOUT_CACHE_MS, and a 2-minute memory soak.
# BENCH_FLAGS passes more flags, e.g. BENCH_FLAGS=-json.
BENCH_FLAGS ?=
bench: deps bench-deps build
	./bin/flashstock bench -suite $(BENCH_FLAGS) | tee bin/bench-report.txt

# Go micro-benchmarks of the engine and the syncer (about 80 s).
bench-go: deps
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime 3s ./engine/ ./sync/

# wrk and redis-benchmark (Debian packages wrk, redis-tools) for the suite.
bench-deps:
	@command -v wrk >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1 || { \
	  echo "installing wrk and redis-benchmark (Debian packages wrk, redis-tools)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk redis-tools >/dev/null; }

# The issue-2 figure: hot-SKU checkout against redis-benchmark's trivial EVALSHA,
# interleaved (RUNS pairs), so each ratio compares two figures from the same moment.
RUNS ?= 5
bench-ratio: deps
	@$(GO) test -c -o bin/engine.test ./engine/
	@for i in $$(seq $(RUNS)); do \
	  ./bin/engine.test -test.run '^$$' -test.bench 'CheckoutHotSKU|RedisBenchmarkCeiling' -test.benchtime 3s \
	    | awk '/ops\/s/ { for (i = 1; i <= NF; i++) if ($$i == "ops/s") v[n++] = $$(i-1) } \
	           END { printf "checkout %7.0f ops/s   ceiling %7.0f ops/s   ratio %.2f\n", v[0], v[1], v[0]/v[1] }'; \
	done

lint:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

# Alert rules: syntax and unit tests with promtool (Debian package prometheus).
check-alerts:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing promtool (Debian package prometheus)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq prometheus >/dev/null; \
	  $$SUDO service prometheus stop >/dev/null 2>&1 || true; }
	cd deploy/prometheus && promtool check rules alerts.yml && promtool test rules alerts_test.yml

# Grafana dashboards and Prometheus' config (docs/OPERATIONS.md, "Dashboards"): every
# flashstock_* metric a panel names must be defined in the Go code, every expression must
# parse, panels must use the provisioned datasource; prometheus.yml (and the rule file it
# loads) must pass promtool. Offline, about a second.
check-dashboards:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing promtool (Debian package prometheus)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq prometheus >/dev/null; \
	  $$SUDO service prometheus stop >/dev/null 2>&1 || true; }
	python3 deploy/grafana/check-dashboards.py
	promtool check config deploy/prometheus/prometheus.yml

# A local Redis Cluster for people: 3 masters + 3 replicas, native redis-server
# processes on 127.0.0.1:7100-7105 (bus ports 17100-17105), node timeout 1 s, no
# persistence, files under ./data/cluster. It keeps running in the background and
# prints the REDIS_CLUSTER_ADDRS value to use; `make cluster-down` stops exactly those
# processes (pidfiles, checked to still be redis-servers running there) and removes
# the files. CLUSTER_PORT and CLUSTER_DIR move it.
CLUSTER_DIR  ?= data/cluster
CLUSTER_PORT ?= 7100
cluster-up: deps
	@$(GO) run ./internal/rediscluster/cmd/rediscluster up -dir $(CLUSTER_DIR) -port $(CLUSTER_PORT)

cluster-down:
	@$(GO) run ./internal/rediscluster/cmd/rediscluster down -dir $(CLUSTER_DIR)

# Every compose file must parse: `docker-compose config -q` (Debian package
# docker-compose, v1) validates without a Docker engine.
COMPOSE_FILES ?= docker-compose.yml $(wildcard deploy/compose/*.yml)
check-compose:
	@command -v docker-compose >/dev/null 2>&1 || { \
	  echo "installing docker-compose (Debian package docker-compose)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
	@for f in $(COMPOSE_FILES); do \
	  echo "docker-compose -f $$f config -q"; \
	  JWT_SECRET=compose-check-placeholder-0123456789abcdef docker-compose -f $$f config -q || exit 1; \
	done

fmt:
	gofmt -w $$(git ls-files '*.go')

# Debian's chromium, for the dashboard's browser test (api/dashboard_browser_test.go),
# which starts it headless with a fresh profile and no network features.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (Debian package)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@chromium --version 2>/dev/null

deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	  $$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; }
	@redis-server --version
	@redis-server --version | sed -n 's/.*v=\([0-9]*\)\..*/\1/p' | { read major; [ "$${major:-0}" -ge 7 ] || { \
	  echo "redis-server 7.0 or later is needed (cluster tests use CLUSTER ADDSLOTSRANGE)"; exit 1; }; }
