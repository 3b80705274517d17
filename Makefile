# flashstock — everyday commands. `make run` serves on embedded defaults; `make test` runs
# every test (unit, real redis-server, embedded FerretDB).

GO      ?= go
PKGS    ?= ./...
BENCH   ?= .
TIMEOUT ?= 15m

.PHONY: all build run test test-race bench bench-ratio lint check-alerts fmt deps

all: lint test

build:
	$(GO) build -o bin/flashstock ./cmd/flashstock

run:
	$(GO) run ./cmd/flashstock serve

# Tests start their own redis-server processes on free loopback ports; `deps` makes sure
# the binary is there (Debian package redis-server) without touching any running Redis.
test: deps
	$(GO) test -count=1 -timeout $(TIMEOUT) $(PKGS)

test-race: deps
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)

bench: deps
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime 3s ./engine/ ./sync/

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

fmt:
	gofmt -w $$(git ls-files '*.go')

deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	  $$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; }
	@redis-server --version
