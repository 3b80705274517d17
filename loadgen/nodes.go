package loadgen

import "fmt"

// NodeFigures are what one Redis node did during a run: read from its INFO (cpu and
// commandstats) before and after.
type NodeFigures struct {
	Addr string `json:"addr"`
	// Role is "master" or "replica".
	Role string `json:"role"`
	// Partitions is how many of the engine's partitions (hash tags) the node's slots
	// hold (masters only).
	Partitions int `json:"partitions,omitempty"`
	// ScriptCalls counts EVAL, EVALSHA and their _RO forms; WaitCalls counts WAIT.
	ScriptCalls int64 `json:"scriptCalls"`
	WaitCalls   int64 `json:"waitCalls,omitempty"`
	// CPUSeconds is used_cpu_user + used_cpu_sys (every thread of the node).
	CPUSeconds float64 `json:"cpuSeconds"`
}

// NodesFigures are the per-node figures of a run on Redis: the basis for projecting
// throughput onto more masters (docs/OPERATIONS.md).
type NodesFigures struct {
	// Partitions is the engine's partition count; WaitReplicas its WAIT setting.
	Partitions   int `json:"partitions"`
	WaitReplicas int `json:"waitReplicas"`
	// Nodes: masters first, then replicas.
	Nodes []NodeFigures `json:"nodes"`
	// BusiestMaster is the master that used the most CPU; CartsPerBusiestMasterCPUSecond
	// the carts sold per CPU-second it used: the rate this layout reaches when that master
	// saturates one core. CartsPerMasterCPUSecond divides by the CPU of every master:
	// the rate per master core when load spreads evenly.
	BusiestMaster                  string  `json:"busiestMaster"`
	CartsPerBusiestMasterCPUSecond float64 `json:"cartsPerBusiestMasterCpuSecond"`
	CartsPerMasterCPUSecond        float64 `json:"cartsPerMasterCpuSecond"`
	// DriverCPUSeconds is this process's CPU (the driver and the engine: the client side).
	DriverCPUSeconds float64 `json:"driverCpuSeconds"`
	// OutcomeUnknownRetries counts checkouts sent again with the same idempotency key
	// after engine.ErrOutcomeUnknown.
	OutcomeUnknownRetries int64 `json:"outcomeUnknownRetries"`
	// SKUsUnbalanced counts SKUs whose available + reserved + sold differ from the
	// units they were created with (must be 0).
	SKUsUnbalanced int64 `json:"skusUnbalanced"`
}

// lines describes the figures for the report's details (none for nil).
func (n *NodesFigures) lines() []string {
	if n == nil {
		return nil
	}
	out := []string{fmt.Sprintf("    %d partition(s), WAIT %d: %d outcome-unknown retries, %d SKUs unbalanced; carts per CPU-second of the busiest master (%s) %.0f, of all masters %.0f; driver CPU %.2f s",
		n.Partitions, n.WaitReplicas, n.OutcomeUnknownRetries, n.SKUsUnbalanced, n.BusiestMaster,
		n.CartsPerBusiestMasterCPUSecond, n.CartsPerMasterCPUSecond, n.DriverCPUSeconds)}
	for _, nd := range n.Nodes {
		s := fmt.Sprintf("    %-7s %s: %d script calls, %d WAIT, %.2f CPU s", nd.Role, nd.Addr, nd.ScriptCalls, nd.WaitCalls, nd.CPUSeconds)
		if nd.Role == "master" {
			s += fmt.Sprintf(", %d partition(s)", nd.Partitions)
		}
		out = append(out, s)
	}
	return out
}
