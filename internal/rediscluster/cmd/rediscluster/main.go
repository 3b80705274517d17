// Command rediscluster starts and stops a local Redis Cluster for people (make
// cluster-up, make cluster-down): native redis-server processes on fixed loopback
// ports that keep running after the command returns.
//
//	rediscluster up   [-dir data/cluster] [-port 7100] [-replicas 1] [-node-timeout 1s]
//	rediscluster down [-dir data/cluster]
//
// up uses ports port..port+N-1 and bus ports port+10000..; it prints the
// REDIS_CLUSTER_ADDRS value to use. down stops only the processes whose pidfiles are
// under dir and that are still redis-servers running there, then removes their files.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flashstock/flashstock/internal/rediscluster"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "rediscluster:") {
			msg = "rediscluster: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
}

const defaultDir = "data/cluster"

const usage = "usage: rediscluster up|down [flags] (-h for flags)"

// run does not stop on SIGINT: the nodes are detached, and an interrupted up leaves
// them for down to stop.
func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("rediscluster "+args[0], flag.ContinueOnError)
	dir := fs.String("dir", defaultDir, "directory for the nodes' files (one n<port> subdirectory each)")
	switch args[0] {
	case "up":
		port := fs.Int("port", 7100, "first node's port; nodes use port..port+N-1, bus ports 10000 higher")
		masters := fs.Int("masters", 3, "masters")
		replicas := fs.Int("replicas", 1, "replicas per master")
		timeout := fs.Duration("node-timeout", time.Second, "cluster-node-timeout")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return up(*dir, rediscluster.Options{Masters: *masters, ReplicasPerMaster: *replicas,
			NodeTimeout: *timeout, BasePort: *port, Detached: true}, stdout)
	case "down":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if err := rediscluster.StopDir(*dir); err != nil {
			return err
		}
		os.Remove(*dir) // only if empty: the directory may be the user's
		fmt.Fprintf(stdout, "Redis Cluster in %s stopped\n", *dir)
		return nil
	default:
		return errors.New(usage)
	}
}

func up(dir string, opts rediscluster.Options, stdout io.Writer) error {
	if running, _ := filepath.Glob(filepath.Join(dir, "n[0-9]*", "redis.pid")); len(running) > 0 {
		return fmt.Errorf("%s already holds a cluster (%s); run make cluster-down first", dir, running[0])
	}
	start := time.Now()
	c, err := rediscluster.Start(dir, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Redis Cluster ready in %v: %d masters x %d replicas, node timeout %v, files in %s\n",
		time.Since(start).Round(time.Millisecond), opts.Masters, opts.ReplicasPerMaster, opts.NodeTimeout, c.Dir())
	fmt.Fprintf(stdout, "REDIS_CLUSTER_ADDRS=%s\n", strings.Join(c.Addrs(), ","))
	if dir == defaultDir {
		fmt.Fprintln(stdout, "stop it with: make cluster-down")
	} else {
		fmt.Fprintf(stdout, "stop it with: make cluster-down CLUSTER_DIR=%s\n", dir)
	}
	return nil
}
