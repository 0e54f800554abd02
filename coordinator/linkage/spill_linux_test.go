package linkage_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/coordinator/linkage"
)

// TestSpillWriteError fills the spill "disk": a file size limit
// (RLIMIT_FSIZE, which the Go runtime turns into EFBIG rather than a
// signal) stops the spill file growing. The run fails with an error naming
// the file, on the Add that hit it or at the latest on Table, never with a
// partial table, and its files are removed at once. It does not run in
// parallel: the limit is the process's.
func TestSpillWriteError(t *testing.T) {
	c := loadCatalog(t)
	f := newFixture(t, c, "t2dm-emergency-admissions")
	rng := rand.New(rand.NewPCG(5, 6))
	mem := memory.NewGoAllocator()
	bs := makeBatches(t, rng, mem, f, genLinkage(rng, f, 20000))
	defer release(bs)
	dir := t.TempDir()
	// One partition, so that one file takes every spilled row.
	r := f.newRun(t, linkage.Options{MemoryBudget: 1 << 10, SpillDir: dir, Partitions: 1})

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Skipf("no file size limit here: %v", err)
	}
	lim := old
	lim.Cur = 64 << 10
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Skipf("cannot set a file size limit: %v", err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
				t.Fatalf("restore the file size limit: %v", err)
			}
		}
	}
	defer restore()

	var err error
	for _, b := range bs {
		if err = r.Add(context.Background(), b.site, b.rec); err != nil {
			break
		}
	}
	if err == nil {
		_, _, err = r.Table(context.Background())
	}
	restore()
	t.Logf("the run failed with: %v", err)
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), ".spill") {
		t.Fatalf("the run with a full spill disk ended with %v; want an error naming the spill file", err)
	}
	if files := spillFiles(t, dir); len(files) > 0 {
		t.Errorf("files left after the write error: %v", files)
	}
	if err := r.Add(context.Background(), bs[0].site, bs[0].rec); err == nil {
		t.Error("Add after the write error succeeded")
	}
	if _, _, err := r.Table(context.Background()); err == nil {
		t.Error("Table after the write error succeeded")
	}
}
