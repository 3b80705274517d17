// Command flashstock is the inventory engine's server and tools.
//
//	flashstock [serve]       API, outbox syncer and scheduled jobs (ROLE picks a part)
//	flashstock sync          the outbox syncer alone
//	flashstock reconcile     compare Redis with MongoDB; exit 0 clean, 1 drift
//	flashstock seed          write the demo data
//	flashstock healthcheck   exit 0 if the local server answers /healthz (for containers)
//	flashstock bench         the load tool (flashstock bench -h)
//
// Configuration comes from the environment and a .env file; see README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	var ue usageError
	switch {
	case err == nil:
	case errors.Is(err, errDrift):
		os.Exit(1)
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "flashstock:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "flashstock:", err)
		os.Exit(1)
	}
}

const usage = `usage: flashstock [serve | sync | reconcile [--repair] | seed | healthcheck | bench [flags]]`

// run is the whole program: main only wires it to the process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	if cmd == "help" || cmd == "-h" || cmd == "--help" {
		fmt.Fprintln(stdout, usage)
		return nil
	}
	if cmd == "bench" {
		// The load tool is a client: it needs none of the server's configuration.
		return bench(ctx, args, getenv, stdout)
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	switch cmd {
	case "serve":
		return serve(ctx, cfg, stdout)
	case "sync":
		cfg.Role = "sync"
		return serve(ctx, cfg, stdout)
	case "reconcile":
		repair := len(args) == 1 && args[0] == "--repair"
		if len(args) > 0 && !repair {
			return usageError{usage}
		}
		return reconcile(ctx, cfg, stdout, repair)
	case "seed":
		return seedOnly(ctx, cfg, stdout)
	case "healthcheck":
		return healthcheck(ctx, cfg)
	}
	return usageError{fmt.Sprintf("unknown command %q\n%s", cmd, usage)}
}

// healthcheck asks the server on this host's HOST and PORT whether it is alive.
func healthcheck(ctx context.Context, cfg Config) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	host := cfg.Host
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1" // the server listens on every interface
	}
	u := "http://" + net.JoinHostPort(host, strconv.Itoa(cfg.Port)) + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz answered %d", res.StatusCode)
	}
	return nil
}
