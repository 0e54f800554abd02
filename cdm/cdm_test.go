package cdm

import (
	"errors"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
)

// Published examples: 9434765919 is the NHS Digital test number used in
// their API sandbox documentation; 4010232137 is the worked example of the
// modulus-11 algorithm in the NHS Data Dictionary.
func TestCheckNHSNumber(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"9434765919", nil},
		{"4010232137", nil},
		{"9999999999", nil},
		{"9434765918", ErrNHSNumberCheckDigit},
		{"4010232138", ErrNHSNumberCheckDigit},
		{"1234567890", ErrNHSNumberNoCheck}, // weighted sum 1 mod 11 → 10
		{"943476591", ErrNHSNumberLength},
		{"94347659190", ErrNHSNumberLength},
		{"943 476 5919", ErrNHSNumberLength},
		{"", ErrNHSNumberLength},
		{"94347659A9", ErrNHSNumberNotDigits},
		{"943476591-", ErrNHSNumberNotDigits},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := CheckNHSNumber(tt.in); !errors.Is(got, tt.want) {
				t.Errorf("CheckNHSNumber(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if got := ValidNHSNumber(tt.in); got != (tt.want == nil) {
				t.Errorf("ValidNHSNumber(%q) = %v", tt.in, got)
			}
		})
	}
}

func TestNHSNumberFromSerial(t *testing.T) {
	seen := map[string]bool{}
	next := uint32(400_000_000)
	for i := 0; i < 1000; i++ {
		n, used, err := NHSNumberFromSerial(next)
		if err != nil {
			t.Fatal(err)
		}
		if used < next {
			t.Fatalf("serial went backwards: %d < %d", used, next)
		}
		if !ValidNHSNumber(n) {
			t.Fatalf("minted %q is not valid: %v", n, CheckNHSNumber(n))
		}
		if seen[n] {
			t.Fatalf("minted %q twice", n)
		}
		seen[n] = true
		next = used + 1
	}
	// 999999999 has a check digit (9999999999 is valid), so this must succeed.
	if n, _, err := NHSNumberFromSerial(999_999_999); err != nil || n != "9999999999" {
		t.Fatalf("NHSNumberFromSerial(999999999) = %q, %v", n, err)
	}
}

func TestTables(t *testing.T) {
	want := map[string][]SiteKind{
		TablePatient:       {KindGP, KindTrust},
		TableRegistration:  {KindGP},
		TableClinicalEvent: {KindGP},
		TableMedication:    {KindGP},
		TableAPCEpisode:    {KindTrust},
		TableAEAttendance:  {KindTrust},
		TableOptOut:        {KindGP},
	}
	if got := len(Tables()); got != len(want) {
		t.Fatalf("got %d tables, want %d", got, len(want))
	}
	for name, kinds := range want {
		tab, ok := Lookup(name)
		if !ok {
			t.Fatalf("Lookup(%q) failed", name)
		}
		for _, k := range SiteKinds() {
			wantHeld := false
			for _, w := range kinds {
				wantHeld = wantHeld || w == k
			}
			if tab.HeldByKind(k) != wantHeld {
				t.Errorf("%s held by %s = %v, want %v", name, k, !wantHeld, wantHeld)
			}
		}
		if c, ok := tab.Column(ColNHSNumber); !ok || c.Sensitivity != Identifying {
			t.Errorf("%s: nhs_number missing or not identifying", name)
		}
		s := tab.Schema()
		if s.NumFields() != len(tab.Columns) {
			t.Errorf("%s: schema has %d fields, table %d columns", name, s.NumFields(), len(tab.Columns))
		}
		if v, _ := s.Metadata().GetValue("haven.cdm.table"); s.Metadata().FindKey("haven.cdm.table") < 0 || v != name {
			t.Errorf("%s: schema metadata names table %q", name, v)
		}
	}
	if _, ok := Lookup("patients; drop table patient"); ok {
		t.Error("Lookup accepted an unknown name")
	}
	if len(TablesFor(KindGP)) != 5 || len(TablesFor(KindTrust)) != 3 {
		t.Errorf("TablesFor: gp %d, trust %d; want 5, 3", len(TablesFor(KindGP)), len(TablesFor(KindTrust)))
	}
}

func TestTablesNotShared(t *testing.T) {
	a := Tables()
	a[0].Columns[0].Name = "mutated"
	if b := Tables(); b[0].Columns[0].Name != ColNHSNumber {
		t.Fatal("mutating the result of Tables changed the model")
	}
}

func TestArrowTypes(t *testing.T) {
	apc, _ := Lookup(TableAPCEpisode)
	f, ok := apc.Schema().FieldsByName(ColProcedures)
	if !ok || f[0].Type.ID() != arrow.LIST {
		t.Fatalf("procedures is %v, want list", f)
	}
	pat, _ := Lookup(TablePatient)
	f, _ = pat.Schema().FieldsByName(ColBirthDate)
	if f[0].Type.ID() != arrow.DATE32 {
		t.Fatalf("birth_date is %v, want date32", f[0].Type)
	}
}

func TestVocabularies(t *testing.T) {
	for _, s := range []string{"F", "M", "I", "U"} {
		if !ValidSex(s) {
			t.Errorf("ValidSex(%q) = false", s)
		}
	}
	for _, s := range []string{"f", "X", "", "Male"} {
		if ValidSex(s) {
			t.Errorf("ValidSex(%q) = true", s)
		}
	}
	for _, s := range []string{"elective", "emergency", "maternity", "other"} {
		if !ValidAdmissionMethod(s) {
			t.Errorf("ValidAdmissionMethod(%q) = false", s)
		}
	}
	if ValidAdmissionMethod("Emergency") || ValidAdmissionMethod("21") {
		t.Error("ValidAdmissionMethod accepted a non-CDM value")
	}
	if !ValidOptOutKind("type1") || !ValidOptOutKind("ndop") || ValidOptOutKind("type2") {
		t.Error("ValidOptOutKind wrong")
	}
	if _, err := ParseSiteKind("hospital"); err == nil {
		t.Error("ParseSiteKind accepted hospital")
	}
}
