package national

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// rss is a process's resident set size in bytes, from /proc.
func rss(pid int) (int64, error) { return procStatus(pid, "VmRSS:") }

// peakRSS is a process's peak resident set size so far.
func peakRSS(pid int) (int64, error) { return procStatus(pid, "VmHWM:") }

// procStatus reads a size in kB from a process's /proc status.
func procStatus(pid int, field string) (int64, error) {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read the coordinator's memory: %w", err)
	}
	for line := range strings.Lines(string(s)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s %q: %w", field, line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// cpuTime is a process's user and system CPU time so far, from /proc (in
// clock ticks of 1/100 s, as on Linux everywhere Haven runs).
func cpuTime(pid int) (time.Duration, error) {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read the coordinator's CPU time: %w", err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// spilled is what the coordinator's log says its linkage runs spilled to
// disk, in bytes.
func spilled(logPath string) (int64, error) {
	raw, err := os.ReadFile(logPath)
	if err != nil {
		return 0, err
	}
	var total int64
	for line := range strings.Lines(string(raw)) {
		if !strings.Contains(line, "linkage spilled to disk") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "spilled_bytes="); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					total += n
				}
			}
		}
	}
	return total, nil
}
