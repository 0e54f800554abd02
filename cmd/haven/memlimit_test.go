package main

import (
	"testing"

	"github.com/havenhealth/haven/coordinator/config"
)

func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name        string
		configured  config.ByteSize
		env, cgroup string
		want        int64
		from        string
	}{
		{name: "nothing", want: 0, from: ""},
		{name: "cgroup without a limit", cgroup: "max\n", want: 0, from: ""},
		{name: "cgroup", cgroup: "10000000000\n", want: 9_000_000_000, from: "cgroup memory.max"},
		{name: "configured beats cgroup", configured: 6 << 30, cgroup: "10000000000\n", want: 6 << 30, from: "memory_limit"},
		{name: "environment beats configured", env: "5GiB", configured: 6 << 30, want: 0, from: "GOMEMLIMIT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, from := memoryLimit(&config.Config{MemoryLimit: tc.configured}, tc.env, tc.cgroup)
			if got != tc.want || from != tc.from {
				t.Errorf("memoryLimit = %d from %q, want %d from %q", got, from, tc.want, tc.from)
			}
		})
	}
}
