package catalog

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseDefinition feeds arbitrary bytes to the parser. It must never
// panic; it returns either an ErrorList or a definition that hashes the
// same when parsed again, binds or reports why not, and plans.
func FuzzParseDefinition(f *testing.F) {
	for _, pattern := range []string{"../bundle/definitions/*/definition.yaml", "testdata/*.yaml", "testdata/reformatted/*.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			src, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(src)
		}
	}
	f.Add([]byte("id: x\nversion: 1\ntitle: &a x\nmeasures: *a\n"))
	f.Add([]byte("population: {registered_on: '$d + $d - 1'}\n"))
	cls := codelistMap(loadBundle(f))
	f.Fuzz(func(t *testing.T, src []byte) {
		d, err := ParseDefinition("fuzz.yaml", src, cls)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T is not a non-empty ErrorList: %v", err, err)
			}
			return
		}
		if !json.Valid(d.Canonical()) {
			t.Fatalf("canonical form is not JSON: %s", d.Canonical())
		}
		again, err := ParseDefinition("fuzz.yaml", src, cls)
		if err != nil || again.Hash() != d.Hash() {
			t.Fatalf("second parse differs: %v", err)
		}
		if b, err := d.Bind(nil); err == nil {
			if _, err := d.Bind(b.Params()); err != nil {
				t.Fatalf("wire form does not bind again: %v", err)
			}
		}
		p := d.Plan()
		for _, task := range p.Tasks {
			if _, ok := p.Schema(task.Kind); !ok {
				t.Fatalf("no schema for %s", task.Kind)
			}
		}
	})
}

// FuzzParseCodelist: the codelist reader never panics, and what it accepts
// it accepts again.
func FuzzParseCodelist(f *testing.F) {
	files, _ := filepath.Glob("../bundle/codelists/*.csv")
	for _, file := range files {
		src, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Add([]byte("# system: icd-10\ncode,term\nE11.9,x\n\"E11\",\"y\"\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := ParseCodelist("codelists/fuzz.csv", src)
		if err != nil {
			return
		}
		for _, code := range c.Values() {
			if !c.Contains(code) || !c.Matches(code) {
				t.Fatalf("list does not contain its own code %q", code)
			}
		}
	})
}
