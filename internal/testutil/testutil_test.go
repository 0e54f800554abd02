package testutil

import (
	"fmt"
	"sync"
	"testing"
)

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fmt.Fprintf(&b, "%d\n", i)
		}()
	}
	wg.Wait()
	if n := len(b.String()); n != 20 {
		t.Errorf("%d bytes written, want 20", n)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, "n reaches 3", func() bool { n++; return n >= 3 })
	if n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
}
