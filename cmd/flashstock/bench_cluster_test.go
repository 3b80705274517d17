package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/internal/testcluster"
	"github.com/flashstock/flashstock/loadgen"
	"github.com/flashstock/flashstock/loadgen/suite"
)

// bench -target cluster, end to end and short: its own redis-server and its own 3+3
// cluster, all five cases measured, nothing oversold, per-node figures for each case.
func TestBenchClusterTarget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	args := []string{"bench", "-target", "cluster", "-duration", "300ms", "-concurrency", "16", "-json", "-quiet"}
	if err := run(ctx, args, func(string) string { return "" }, &out); err != nil {
		t.Fatalf("bench -target cluster: %v\n%s", err, out.String())
	}
	var rep loadgen.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("bench -json: %v\n%s", err, out.String())
	}
	cases := []struct {
		target, scenario string
		wait, nodes      int
	}{
		{suite.TargetSingleNode, suite.SinglePartition, 0, 1},
		{suite.TargetCluster, suite.SinglePartition, 0, 6},
		{suite.TargetClusterWait1, suite.SinglePartition, 1, 6},
		{suite.TargetCluster, suite.CrossPartition, 0, 6},
		{suite.TargetClusterWait1, suite.CrossPartition, 1, 6},
	}
	if len(rep.Results) != len(cases) {
		t.Fatalf("want %d results, got %d:\n%s", len(cases), len(rep.Results), out.String())
	}
	for _, c := range cases {
		r := rep.Find(c.target, c.scenario)
		if r == nil {
			t.Errorf("no result for %s %s", c.target, c.scenario)
			continue
		}
		n := r.Nodes
		if r.Successes == 0 || r.Failed() != 0 || r.Refused() != 0 || r.Oversell != 0 || r.Unaccounted != 0 || r.ReservedAfter != 0 ||
			n == nil || n.SKUsUnbalanced != 0 || r.UnitsSold != 2*r.Successes || r.Latency.P99 < r.Latency.P50 || r.Latency.P50 <= 0 {
			t.Errorf("%s %s: %d carts, errors %v %v, refused %v, oversell %d, unaccounted %d, reserved %d, sold %d, latency %+v, nodes %+v",
				c.target, c.scenario, r.Successes, r.Errors, r.ErrorSamples, r.Refusals, r.Oversell, r.Unaccounted, r.ReservedAfter, r.UnitsSold, r.Latency, n)
			continue
		}
		if len(n.Nodes) != c.nodes || n.WaitReplicas != c.wait || n.BusiestMaster == "" || n.CartsPerBusiestMasterCPUSecond <= 0 {
			t.Errorf("%s %s: per-node figures %+v", c.target, c.scenario, n)
		}
		partitions := 0
		for _, nd := range n.Nodes {
			if nd.Role != "master" {
				continue
			}
			partitions += nd.Partitions
			if nd.ScriptCalls == 0 || (c.wait > 0) != (nd.WaitCalls > 0) {
				t.Errorf("%s %s: master %s ran %d scripts and %d WAITs", c.target, c.scenario, nd.Addr, nd.ScriptCalls, nd.WaitCalls)
			}
		}
		if partitions != n.Partitions {
			t.Errorf("%s %s: the masters hold %d partitions, want %d", c.target, c.scenario, partitions, n.Partitions)
		}
	}
	for _, name := range []string{suite.RatioClusterToSingleNode, suite.RatioClusterWait1ToSingleNode, suite.RatioCrossToSingle, suite.RatioCrossToSingleWait1} {
		found := false
		for _, q := range rep.Ratios {
			found = found || (q.Name == name && q.Value > 0)
		}
		if !found {
			t.Errorf("no ratio %q in %+v", name, rep.Ratios)
		}
	}
}

// -target cluster runs each case once for 5 s unless told otherwise; other targets
// keep their defaults.
func TestBenchClusterFlags(t *testing.T) {
	env := func(string) string { return "" }
	for _, tc := range []struct {
		args           []string
		duration       time.Duration
		buyers, rounds int
	}{
		{[]string{"-target", "cluster"}, suite.ClusterDuration, 0, 1},
		{[]string{"-target", "cluster", "-duration", "2s", "-rounds", "3"}, 2 * time.Second, 0, 3},
		{[]string{"-target", "cluster", "-buyers", "5000"}, 0, 5000, 1},
		{nil, 0, 20000, 3},
		{[]string{"-target", "engine"}, 0, 20000, 3},
		{[]string{"-webhooks"}, 0, 5000, 3},
	} {
		f, err := parseBenchFlags(tc.args, env, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		if f.Duration != tc.duration || f.Buyers != tc.buyers || f.Rounds != tc.rounds {
			t.Errorf("%v: duration %s, buyers %d, rounds %d; want %s, %d, %d", tc.args, f.Duration, f.Buyers, f.Rounds, tc.duration, tc.buyers, tc.rounds)
		}
	}
}

// -cluster-addrs measures a cluster someone else runs, here one that requires a
// password (REDIS_CLUSTER_PASSWORD, as serve): its nodes are found through CLUSTER
// SHARDS and its data is never flushed.
func TestBenchClusterTargetOnAGivenCluster(t *testing.T) {
	c := testcluster.Start(t, rediscluster.Options{Password: "bench-cluster-pw"})
	rdb := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := rdb.Set(ctx, "{guard}:k", "kept", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	args := []string{"bench", "-target", "cluster", "-cluster-addrs", strings.Join(c.Addrs()[:2], ","),
		"-duration", "200ms", "-concurrency", "8", "-json", "-quiet"}
	env := func(k string) string {
		if k == "REDIS_CLUSTER_PASSWORD" {
			return "bench-cluster-pw"
		}
		return ""
	}
	if err := run(ctx, args, env, &out); err != nil {
		t.Fatalf("bench -target cluster -cluster-addrs: %v\n%s", err, out.String())
	}
	var rep loadgen.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("bench -json: %v\n%s", err, out.String())
	}
	if len(rep.Results) != 5 {
		t.Fatalf("want 5 results, got %d", len(rep.Results))
	}
	for _, r := range rep.Results[1:] {
		if r.Successes == 0 || r.Failed() != 0 || r.Oversell != 0 || r.Nodes == nil || len(r.Nodes.Nodes) != 6 {
			t.Fatalf("%s %s: %d carts, errors %v, oversell %d, nodes %+v", r.Target, r.Scenario, r.Successes, r.ErrorSamples, r.Oversell, r.Nodes)
		}
		for _, n := range r.Nodes.Nodes {
			if !slices.Contains(c.Addrs(), n.Addr) {
				t.Errorf("%s %s: node %s is not one of the cluster's %v", r.Target, r.Scenario, n.Addr, c.Addrs())
			}
		}
	}
	if v, err := rdb.Get(ctx, "{guard}:k").Result(); err != nil || v != "kept" {
		t.Errorf("the given cluster lost a key: %q, %v", v, err)
	}
}
