package catalog

import (
	"strings"
	"testing"
)

func TestParseCodelist(t *testing.T) {
	tests := []struct {
		name, src string
		want      string // error substring, or "" for a valid list
	}{
		{"snomed", "# system: snomed-ct\ncode,term\n44054006,Diabetes mellitus type 2 (disorder)\n", ""},
		{"dm+d extension identifier", "# system: dmd\ncode,term\n39733211000001101,Atorvastatin 80mg tablets\n", ""},
		{"icd-10 forms", "# system: icd-10\ncode,term\nE11,Type 2 diabetes mellitus\nE11.9,Without complications\nI10X,Essential hypertension\n", ""},
		{"comments, quoted comma, BOM and CRLF", "\ufeff# system: snomed-ct\r\n# from the QOF cluster\r\ncode,term\r\n38341003,\"Hypertensive disorder, systemic arterial\"\r\n", ""},
		{"no system", "code,term\n44054006,x\n", "1:1: system: no code system declared"},
		{"unknown system", "# system: read-v2\ncode,term\nC10F.,x\n", "1:1: system: unknown code system \"read-v2\""},
		{"system twice", "# system: snomed-ct\n# system: dmd\ncode,term\n44054006,x\n", "2:1: system: code system declared twice"},
		{"bad header", "# system: snomed-ct\ncode,description\n44054006,x\n", "2:1: header: header is \"code,description\", want \"code,term\""},
		{"no header", "# system: snomed-ct\n", "2:1: header: missing header"},
		{"no codes", "# system: snomed-ct\ncode,term\n", "2:1: codelist has no codes"},
		{"empty code", "# system: snomed-ct\ncode,term\n,x\n", "3:1: code: empty code"},
		{"spaces", "# system: snomed-ct\ncode,term\n 44054006,x\n", "has surrounding spaces"},
		{"duplicate", "# system: snomed-ct\ncode,term\n44054006,x\n44054006,y\n", "4:1: code: duplicate code 44054006 (first on line 3)"},
		{"icd-10 duplicate spellings", "# system: icd-10\ncode,term\nE11.9,x\nE119,y\n", "duplicate code E119 (first on line 3)"},
		{"check digit", "# system: snomed-ct\ncode,term\n44054007,x\n", "44054007 fails the SNOMED CT check digit"},
		{"description id", "# system: snomed-ct\ncode,term\n1234011,x\n", "1234011 is a SNOMED CT identifier but not a concept (partition 01)"},
		{"too short", "# system: snomed-ct\ncode,term\n12345,x\n", "\"12345\" is not a snomed-ct code: want 6 to 18 digits"},
		{"leading zero", "# system: dmd\ncode,term\n0319996000,x\n", "is not a dmd code"},
		{"not digits", "# system: snomed-ct\ncode,term\nE11,x\n", "\"E11\" is not a snomed-ct code"},
		{"icd-10 lower case", "# system: icd-10\ncode,term\ne11,x\n", "\"e11\" is not an ICD-10 code"},
		{"icd-10 too short", "# system: icd-10\ncode,term\nE1,x\n", "\"E1\" is not an ICD-10 code"},
		{"icd-10 snomed code", "# system: icd-10\ncode,term\n44054006,x\n", "is not an ICD-10 code"},
		{"no term", "# system: snomed-ct\ncode,term\n44054006,  \n", "3:10: term: code 44054006 has no term"},
		{"three fields", "# system: snomed-ct\ncode,term\n44054006,Diabetes, type 2\n", "3:1: row has 3 fields, want 2"},
		{"bad quoting", "# system: snomed-ct\ncode,term\n44054006,\"open\n", "extraneous or missing \" in quoted-field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCodelist("codelists/test.csv", []byte(tt.src))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("parsed without error: %v", c.Codes())
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error lacks %q:\n%v", tt.want, err)
			}
		})
	}
}

func TestCodelistErrorsAllReported(t *testing.T) {
	src := "# system: snomed-ct\ncode,term\n44054007,a\n12345,b\n44054006,\n44054006,d\n"
	_, err := ParseCodelist("codelists/x.csv", []byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{":3:1: code: 44054007 fails", ":4:1: code: \"12345\"", ":5:10: term: code 44054006 has no term", ":6:1: code: duplicate code 44054006"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

func TestCodelistName(t *testing.T) {
	_, err := ParseCodelist("codelists/T2DM list.csv", []byte("# system: snomed-ct\ncode,term\n44054006,x\n"))
	if err == nil || !strings.Contains(err.Error(), "codelist name \"T2DM list\"") {
		t.Errorf("err = %v, want a bad-name error", err)
	}
}

func TestCodelistMatching(t *testing.T) {
	icd, err := ParseCodelist("codelists/copd-icd10.csv", []byte("# system: icd-10\ncode,term\nJ44,COPD\nJ43.9,Emphysema\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(icd.Values(), ","); got != "J439,J44" {
		t.Errorf("Values = %s, want the dotless forms, sorted", got)
	}
	for code, want := range map[string]bool{"J44": true, "J44.1": true, "J449": true, "J43.9": true, "J439": true, "J43": false, "J45": false, "J4": false} {
		if got := icd.Matches(code); got != want {
			t.Errorf("ICD-10 Matches(%q) = %v, want %v", code, got, want)
		}
	}
	if !icd.Contains("J43.9") || icd.Contains("J44.1") {
		t.Error("Contains must not prefix-match")
	}
	sct, err := ParseCodelist("codelists/t2dm.csv", []byte("# system: snomed-ct\ncode,term\n44054006,T2DM\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !sct.Matches("44054006") || sct.Matches("4405400") || sct.Matches("440540061") {
		t.Error("SNOMED CT must match exactly")
	}
}

// TestReferenceCodelistsValid guards the bundle's lists: every code passes
// the check digit and shape checks (Load would fail otherwise) and every
// list has several codes.
func TestReferenceCodelistsValid(t *testing.T) {
	for _, cl := range loadBundle(t).Codelists() {
		if cl.Len() < 5 {
			t.Errorf("codelist %s has %d codes; the reference lists hold several", cl.Name, cl.Len())
		}
	}
}
