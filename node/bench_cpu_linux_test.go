package node

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// processCPU returns the CPU time (user and system) this process has
// used, and its child processes (the connector plugin) so far, for
// benchmarks on a host too busy for wall time to mean much. ok is false
// where it cannot tell.
func processCPU(b *testing.B) (self, children time.Duration, ok bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, false
	}
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for _, pid := range childPIDs(b, os.Getpid()) {
		raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
		// After the name: state is field 0, utime 11, stime 12, in
		// clock ticks, which are 1/100 s on Linux.
		if len(f) > 12 {
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			children += time.Duration(ut+st) * 10 * time.Millisecond
		}
	}
	return self, children, true
}
