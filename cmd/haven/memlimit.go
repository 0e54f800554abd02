package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/havenhealth/haven/coordinator/config"
)

// cgroupMemoryMax is where cgroup v2 says how much memory the process's
// group may use.
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// memoryLimit decides the Go soft memory limit of a coordinator: the
// GOMEMLIMIT environment variable if set (the runtime has applied it
// already; 0 is returned), else memory_limit from its configuration,
// else 90% of the cgroup's memory.max (the contents of cgroupMax; "max"
// or "" for none), as Prometheus's auto-gomemlimit does. It returns the
// limit to set and where it came from; 0 sets none.
func memoryLimit(cfg *config.Config, env, cgroupMax string) (int64, string) {
	if env != "" {
		return 0, "GOMEMLIMIT"
	}
	if cfg.MemoryLimit > 0 {
		return int64(cfg.MemoryLimit), "memory_limit"
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(cgroupMax), 10, 64); err == nil && n > 0 {
		return n / 10 * 9, "cgroup memory.max"
	}
	return 0, ""
}

// applyMemoryLimit sets the coordinator's soft memory limit as
// memoryLimit decides and returns it and its source for the log.
func applyMemoryLimit(cfg *config.Config) (int64, string) {
	cg, _ := os.ReadFile(cgroupMemoryMax) // absent outside a cgroup v2 container
	limit, from := memoryLimit(cfg, os.Getenv("GOMEMLIMIT"), string(cg))
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	if from == "GOMEMLIMIT" {
		limit = debug.SetMemoryLimit(-1) // reads it
	}
	return limit, from
}
