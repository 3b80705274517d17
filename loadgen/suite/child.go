package suite

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/flashstock/flashstock/internal/redisserver"
)

// child is a flashstock server process started by the suite.
type child struct {
	url  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// startServer runs this binary's serve with env (and DATA_DIR, PORT) and waits until it
// is ready.
func startServer(ctx context.Context, dataDir string, env map[string]string) (*child, error) {
	return startChild(ctx, dataDir, env, "serve")
}

// startChild runs this binary with args and env (and DATA_DIR, PORT) and waits until it
// answers /readyz.
func startChild(ctx context.Context, dataDir string, env map[string]string, args ...string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return startCommand(ctx, dataDir, env, true, self, args...)
}

// startWorker runs this binary's serve with ROLE=worker in env, at the scheduling
// priority nice (as `nice -n`, so every thread has it), and returns once ready says so
// (a worker serves no HTTP).
func startWorker(ctx context.Context, dataDir string, env map[string]string, nice int, ready func() bool) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c, err := startCommand(ctx, dataDir, env, false, "nice", "-n", strconv.Itoa(nice), self, "serve")
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(60 * time.Second); !ready(); {
		select {
		case <-c.done:
			return nil, fmt.Errorf("worker exited before it was ready (log: %s.log)", dataDir)
		case <-ctx.Done():
			c.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, fmt.Errorf("worker not ready after 60 s (log: %s.log)", dataDir)
		}
	}
	return c, nil
}

// startMongo runs this binary as an embedded FerretDB (bench -serve-mongo) at the given
// nice and returns it with its URI once it accepts connections.
func startMongo(ctx context.Context, dataDir string, nice int) (*child, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	c, err := startCommand(ctx, dataDir+"-server", nil, false, "nice", "-n", strconv.Itoa(nice), self, "bench", "-serve-mongo", dataDir)
	if err != nil {
		return nil, "", err
	}
	addr := strings.TrimPrefix(c.url, "http://")
	for deadline := time.Now().Add(30 * time.Second); ; {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return c, "mongodb://" + addr + "/", nil
		}
		select {
		case <-c.done:
			return nil, "", fmt.Errorf("embedded FerretDB exited before it listened (log: %s-server.log)", dataDir)
		case <-ctx.Done():
			c.stop()
			return nil, "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, "", fmt.Errorf("embedded FerretDB not listening after 30 s")
		}
	}
}

// startCommand runs name with args, env, DATA_DIR and PORT, its output in a log file
// beside dataDir, and if waitReady, waits until it answers /readyz.
func startCommand(ctx context.Context, dataDir string, env map[string]string, waitReady bool, name string, args ...string) (*child, error) {
	port, err := redisserver.FreePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "DATA_DIR="+dataDir, "MONGODB_URI=", "SEED_DEMO=false")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// The server's own log goes to a file beside its data, out of the report's way; a
	// server that fails to start has its log's end in the error.
	logPath := dataDir + ".log"
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	failed := func(err error) error {
		b, _ := os.ReadFile(logPath)
		return fmt.Errorf("%w; server log ends:\n%s", err, b[max(0, len(b)-2000):])
	}
	c := &child{url: "http://127.0.0.1:" + strconv.Itoa(port), cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	if !waitReady {
		return c, nil
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"/readyz", nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		select {
		case <-c.done:
			return nil, failed(fmt.Errorf("server exited before it was ready"))
		case <-ctx.Done():
			c.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, failed(fmt.Errorf("server on %s not ready after 60 s", c.url))
		}
	}
}

// stop asks the server to shut down (SIGINT) and waits; it kills it after 15 s.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}
