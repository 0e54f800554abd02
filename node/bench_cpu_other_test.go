//go:build !linux

package node

import (
	"testing"
	"time"
)

func processCPU(*testing.B) (self, children time.Duration, ok bool) { return 0, 0, false }
