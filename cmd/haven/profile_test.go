package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestProfilesWritten(t *testing.T) {
	dir := t.TempDir()
	p := profiles{cpuPath: filepath.Join(dir, "cpu.pprof"), heapPath: filepath.Join(dir, "heap.pprof")}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p.cpuPath, p.heapPath} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// pprof's format is gzipped protobuf.
		if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
			t.Errorf("%s: not a gzipped profile (%d bytes)", f, len(b))
		}
	}
}

func TestProfilesRefuseUnwritablePath(t *testing.T) {
	p := profiles{cpuPath: filepath.Join(t.TempDir(), "missing", "cpu.pprof")}
	if err := p.start(); err == nil {
		p.stop()
		t.Fatal("start wrote a profile into a directory that does not exist")
	}
	if err := (&profiles{}).stop(); err != nil {
		t.Fatalf("stop with no profiles: %v", err)
	}
}
