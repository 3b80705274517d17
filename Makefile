# flashstock — everyday commands. `make run` serves on embedded defaults; `make test` runs
# every test (unit, real redis-server, embedded FerretDB).

GO      ?= go
PKGS    ?= ./...
BENCH   ?= .
TIMEOUT ?= 15m

.PHONY: all build run test test-race bench lint fmt deps

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

lint:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	  $$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; }
	@redis-server --version
