package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path"
	"strings"
	"testing"
	"testing/fstest"

	"gopkg.in/yaml.v3"

	"github.com/havenhealth/haven/cdm"
)

const bundleDir = "../bundle"

// loadBundle loads the reference catalogue in policy/bundle.
func loadBundle(t testing.TB) *Catalog {
	t.Helper()
	c, err := Load(os.DirFS(bundleDir))
	if err != nil {
		t.Fatalf("Load(%s):\n%v", bundleDir, err)
	}
	return c
}

func codelistMap(c *Catalog) map[string]*Codelist {
	m := map[string]*Codelist{}
	for _, cl := range c.Codelists() {
		m[cl.Name] = cl
	}
	return m
}

// bundleFS copies the reference bundle's definitions and codelists into a
// MapFS that a test may edit.
func bundleFS(t *testing.T) fstest.MapFS {
	t.Helper()
	m := fstest.MapFS{}
	bundle := os.DirFS(bundleDir)
	for _, dir := range []string{DefinitionsDir, CodelistsDir} {
		err := fs.WalkDir(bundle, dir, func(name string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			src, err := fs.ReadFile(bundle, name)
			if err != nil {
				return err
			}
			m[name] = &fstest.MapFile{Data: src}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func TestReferenceCatalogue(t *testing.T) {
	c := loadBundle(t)
	want := map[string]struct {
		mode       Mode
		population cdm.SiteKind
		codelists  []string
	}{
		"t2dm-prevalence":            {ModeAggregate, cdm.KindGP, []string{"t2dm"}},
		"bp-control-hypertension":    {ModeAggregate, cdm.KindGP, []string{"hypertension", "systolic-bp"}},
		"statins-chd":                {ModeAggregate, cdm.KindGP, []string{"chd", "statins"}},
		"t2dm-emergency-admissions":  {ModeLinkage, cdm.KindGP, []string{"t2dm"}},
		"copd-ae-attendances":        {ModeLinkage, cdm.KindGP, []string{"copd", "copd-icd10"}},
		"emergency-readmissions-30d": {ModeLinkage, cdm.KindTrust, nil},
	}
	defs := c.Definitions()
	if len(defs) != len(want) {
		t.Errorf("catalogue has %d definitions, want %d", len(defs), len(want))
	}
	hashes := map[string]string{}
	for _, d := range defs {
		w, ok := want[d.ID]
		if !ok {
			t.Errorf("unexpected definition %s", d.ID)
			continue
		}
		if got, ok := c.Get(d.ID); !ok || got != d {
			t.Errorf("Get(%q) = %v, %v", d.ID, got, ok)
		}
		p := d.Plan()
		if p.Mode != w.mode || p.Population != w.population {
			t.Errorf("%s: plan %s at %s, want %s at %s", d.ID, p.Mode, p.Population, w.mode, w.population)
		}
		if got := strings.Join(d.CodelistNames(), ","); got != strings.Join(w.codelists, ",") {
			t.Errorf("%s: codelists %s, want %s", d.ID, got, strings.Join(w.codelists, ","))
		}
		if len(d.Hash()) != 64 {
			t.Errorf("%s: hash %q is not SHA-256 hex", d.ID, d.Hash())
		}
		if other, dup := hashes[d.Hash()]; dup {
			t.Errorf("%s and %s have the same hash", d.ID, other)
		}
		hashes[d.Hash()] = d.ID
		if !json.Valid(d.Canonical()) {
			t.Errorf("%s: canonical form is not JSON:\n%s", d.ID, d.Canonical())
		}
		// Every reference definition binds with no values at all.
		b, err := d.Bind(nil)
		if err != nil {
			t.Errorf("%s: Bind(nil): %v", d.ID, err)
			continue
		}
		if len(b.Params()) != len(d.Parameters) {
			t.Errorf("%s: bound %d parameters, want %d", d.ID, len(b.Params()), len(d.Parameters))
		}
	}
	if _, ok := c.Get("no-such-definition"); ok {
		t.Error("Get of an unknown id succeeded")
	}
	if cl, ok := c.Codelist("statins"); !ok || cl.System != DMD || cl.Len() < 10 {
		t.Errorf("Codelist(statins) = %v, %v", cl, ok)
	}
}

// TestReferenceCodes checks the codes the synthetic network generates are
// in the reference lists, so the reference queries find patients in it.
func TestReferenceCodes(t *testing.T) {
	c := loadBundle(t)
	for list, code := range map[string]string{
		"t2dm": "44054006", "hypertension": "38341003", "copd": "13645005",
		"chd": "53741008", "systolic-bp": "271649006",
	} {
		cl, ok := c.Codelist(list)
		if !ok || !cl.Contains(code) {
			t.Errorf("codelist %s lacks %s", list, code)
		}
	}
}

// reformat rewrites a YAML document without changing its meaning: mapping
// keys reversed, everything in block style (the reference files use flow
// style inside block style), strings and dates double quoted, comments
// dropped.
func reformat(t *testing.T, src []byte) []byte {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		n.HeadComment, n.LineComment, n.FootComment = "", "", ""
		switch n.Kind {
		case yaml.MappingNode:
			pairs := n.Content
			rev := make([]*yaml.Node, 0, len(pairs))
			for i := len(pairs) - 2; i >= 0; i -= 2 {
				rev = append(rev, pairs[i], pairs[i+1])
			}
			n.Content = rev
			n.Style = 0
		case yaml.SequenceNode:
			n.Style = 0
		case yaml.ScalarNode:
			switch n.ShortTag() {
			case "!!str", "!!timestamp":
				n.Tag, n.Style = "!!str", yaml.DoubleQuotedStyle
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(4)
	if err := enc.Encode(&doc); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestHashStableUnderReformatting(t *testing.T) {
	c := loadBundle(t)
	cls := codelistMap(c)
	for _, d := range c.Definitions() {
		t.Run(d.ID, func(t *testing.T) {
			src, err := os.ReadFile(path.Join(bundleDir, d.File()))
			if err != nil {
				t.Fatal(err)
			}
			re := reformat(t, src)
			if bytes.Equal(re, src) {
				t.Fatal("reformat changed nothing")
			}
			d2, err := ParseDefinition(d.File(), re, cls)
			if err != nil {
				t.Fatalf("reformatted copy does not parse: %v\n%s", err, re)
			}
			if d2.Hash() != d.Hash() {
				t.Errorf("hash changed under reformatting\noriginal:    %s\nreformatted: %s\n%s", d.Canonical(), d2.Canonical(), re)
			}
		})
	}
	// A hand-written copy that also uses the equivalent spellings of the
	// language: $param for a bare name, bands for a width, a list of one.
	d, _ := c.Get("t2dm-emergency-admissions")
	src, err := os.ReadFile("testdata/reformatted/t2dm-emergency-admissions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d2, err := ParseDefinition("reformatted.yaml", src, cls)
	if err != nil {
		t.Fatal(err)
	}
	if d2.Hash() != d.Hash() {
		t.Errorf("hand-reformatted copy hashes differently\noriginal:    %s\nreformatted: %s", d.Canonical(), d2.Canonical())
	}
}

func TestHashChangesWithMeaning(t *testing.T) {
	c := loadBundle(t)
	cls := codelistMap(c)
	d, _ := c.Get("t2dm-emergency-admissions")
	src, err := os.ReadFile(path.Join(bundleDir, d.File()))
	if err != nil {
		t.Fatal(err)
	}
	edits := []struct{ name, old, new string }{
		{"version", "version: 3", "version: 4"},
		{"title", "title: Emergency admissions", "title: Emergency hospital admissions"},
		{"default", "default: 365", "default: 366"},
		{"min age", "min: 18}", "min: 19}"},
		{"window start", "between: [$index_date,", "between: [$index_date + 1,"},
		{"offset sign", "$index_date + followup_days", "$index_date - followup_days"},
		{"band width", "width: 10", "width: 5"},
		{"filter", "admission_method: emergency", "admission_method: [emergency, maternity]"},
		{"codelist", "codelist: t2dm", "codelist: chd"},
		{"condition", "emergency_admissions > 0", "emergency_admissions > 1"},
		{"dominance", "sum: emergency_admissions}", "sum: emergency_admissions, dominance: false}"},
		{"group order", "group_by: [age_band, sex]", "group_by: [sex, age_band]"},
		{"measure name", "name: admitted", "name: admitted_any"},
	}
	seen := map[string]string{d.Hash(): "original"}
	for _, e := range edits {
		if !bytes.Contains(src, []byte(e.old)) {
			t.Fatalf("%s: %q not in the definition", e.name, e.old)
		}
		edited := bytes.Replace(src, []byte(e.old), []byte(e.new), 1)
		d2, err := ParseDefinition(d.File(), edited, cls)
		if err != nil {
			t.Errorf("%s: edited definition does not parse: %v", e.name, err)
			continue
		}
		if prev, dup := seen[d2.Hash()]; dup {
			t.Errorf("%s: hash equals that of %s", e.name, prev)
		}
		seen[d2.Hash()] = e.name
	}
}

func TestHashChangesWithCodelist(t *testing.T) {
	base := loadBundle(t)
	for _, edit := range []struct{ name, old, new string }{
		{"term", "Diabetes mellitus type 2 (disorder)", "Type 2 diabetes mellitus (disorder)"},
		{"code added", "code,term\n", "code,term\n38341003,Hypertensive disorder systemic arterial (disorder)\n"},
		{"code removed", "9859006,Type 2 diabetes mellitus with acanthosis nigricans (disorder)\n", ""},
	} {
		t.Run(edit.name, func(t *testing.T) {
			m := bundleFS(t)
			f := m["codelists/t2dm.csv"]
			if !bytes.Contains(f.Data, []byte(edit.old)) {
				t.Fatalf("%q not in t2dm.csv", edit.old)
			}
			f.Data = bytes.Replace(f.Data, []byte(edit.old), []byte(edit.new), 1)
			c, err := Load(m)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range c.Definitions() {
				old, _ := base.Get(d.ID)
				usesT2DM := d.ID == "t2dm-prevalence" || d.ID == "t2dm-emergency-admissions"
				if changed := d.Hash() != old.Hash(); changed != usesT2DM {
					t.Errorf("%s: hash changed = %v after editing t2dm.csv, want %v", d.ID, changed, usesT2DM)
				}
			}
		})
	}
	// A comment is not part of a codelist: editing it changes nothing.
	m := bundleFS(t)
	m["codelists/t2dm.csv"].Data = append([]byte("# reviewed again in 2025\n"), m["codelists/t2dm.csv"].Data...)
	c, err := Load(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range c.Definitions() {
		if old, _ := base.Get(d.ID); d.Hash() != old.Hash() {
			t.Errorf("%s: hash changed after a codelist comment edit", d.ID)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	good := bundleFS(t)
	tests := []struct {
		name string
		edit func(m fstest.MapFS)
		want []string
		not  []string
	}{
		{"id differs from directory name", func(m fstest.MapFS) {
			m["definitions/other-name/definition.yaml"] = m["definitions/statins-chd/definition.yaml"]
		}, []string{"definitions/other-name/definition.yaml: id: file definitions/other-name/definition.yaml declares id \"statins-chd\"; name the directory definitions/statins-chd/"}, nil},
		{"file directly under definitions", func(m fstest.MapFS) {
			m["definitions/statins-chd.yaml"] = m["definitions/statins-chd/definition.yaml"]
		}, []string{"definitions/statins-chd.yaml: unexpected file in definitions/: each definition is definitions/<id>/definition.yaml"}, nil},
		{"stray file beside a definition", func(m fstest.MapFS) {
			m["definitions/statins-chd/README.md"] = &fstest.MapFile{Data: []byte("notes")}
		}, []string{"definitions/statins-chd/README.md: unexpected file in definitions/statins-chd/: only definition.yaml belongs there"}, nil},
		{"yml extension", func(m fstest.MapFS) {
			m["definitions/x/definition.yml"] = &fstest.MapFile{Data: []byte("id: x")}
		}, []string{
			"definitions/x/definition.yml: unexpected file",
			"definitions/x: no definition.yaml in definitions/x/",
		}, nil},
		{"nested directory", func(m fstest.MapFS) {
			m["definitions/statins-chd/old/definition.yaml"] = m["definitions/statins-chd/definition.yaml"]
		}, []string{"definitions/statins-chd/old: unexpected directory in definitions/statins-chd/"}, nil},
		{"subdirectory", func(m fstest.MapFS) {
			m["codelists/old/t2dm.csv"] = &fstest.MapFile{Data: []byte("x")}
		}, []string{"codelists/old: unexpected directory in codelists/"}, nil},
		{name: "broken codelist reported once", edit: func(m fstest.MapFS) {
			m["codelists/t2dm.csv"].Data = []byte("# system: snomed-ct\ncode,term\n44054007,typo\n")
		}, want: []string{"codelists/t2dm.csv:3:1: code: 44054007 fails the SNOMED CT check digit"},
			not: []string{"unknown codelist"}},
		{"errors in several files", func(m fstest.MapFS) {
			m["codelists/bad.csv"] = &fstest.MapFile{Data: []byte("# system: snomed-ct\ncode,term\n44054007,typo\n")}
			m["definitions/broken/definition.yaml"] = &fstest.MapFile{Data: []byte("id: broken\nversion: 1\n")}
		}, []string{
			"codelists/bad.csv:3:1: code: 44054007 fails the SNOMED CT check digit",
			"definitions/broken/definition.yaml:1:1: missing required field \"title\"",
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := fstest.MapFS{}
			for k, v := range good {
				m[k] = &fstest.MapFile{Data: v.Data}
			}
			tt.edit(m)
			_, err := Load(m)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error has %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestCatalogParseDefinition(t *testing.T) {
	c := loadBundle(t)
	src, err := os.ReadFile(path.Join(bundleDir, DefinitionPath("statins-chd")))
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.ParseDefinition("draft.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := c.Get("statins-chd"); d.Hash() != want.Hash() {
		t.Error("parsing a draft against the catalogue gives another hash")
	}
	if d.File() != "draft.yaml" {
		t.Errorf("File() = %q", d.File())
	}
}

func TestLoadEmptyBundle(t *testing.T) {
	c, err := Load(fstest.MapFS{"data.json": &fstest.MapFile{Data: []byte("{}")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Definitions()) != 0 || len(c.Codelists()) != 0 {
		t.Errorf("empty bundle gave %d definitions, %d codelists", len(c.Definitions()), len(c.Codelists()))
	}
}

// failingFS fails every read, to check Load passes file system errors on.
type failingFS struct{}

func (failingFS) Open(string) (fs.File, error) { return nil, fs.ErrPermission }

func TestLoadFileSystemError(t *testing.T) {
	if _, err := Load(failingFS{}); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("Load = %v, want a wrapped fs.ErrPermission", err)
	}
}
