package optout

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/havenhealth/haven/cdm"
)

func validNumbers(t testing.TB, n int, seed uint64) []string {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]string, n)
	for i := range out {
		s, _, err := cdm.NHSNumberFromSerial(uint32(r.IntN(999_999_999)))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = s
	}
	return out
}

func TestSetContains(t *testing.T) {
	nums := validNumbers(t, 500, 1)
	others := validNumbers(t, 500, 2)
	s := Of(nums...)
	for _, n := range nums {
		if !s.Contains(n) {
			t.Fatalf("set lacks a number it was built from")
		}
	}
	inSet := map[string]bool{}
	for _, n := range nums {
		inSet[n] = true
	}
	for _, n := range others {
		if s.Contains(n) != inSet[n] {
			t.Fatalf("Contains wrong for a number not added")
		}
	}
	for _, bad := range []string{"", "123", "abcdefghij", nums[0] + "0", " " + nums[0][1:]} {
		if s.Contains(bad) {
			t.Errorf("Contains(%q) = true", bad)
		}
	}
	var empty *Set
	if empty.Contains(nums[0]) || empty.Len() != 0 || len(empty.Strings()) != 0 {
		t.Error("nil set is not empty")
	}
}

func TestBuilderCountsInvalid(t *testing.T) {
	good := validNumbers(t, 3, 3)
	bad := good[0][:9] + string('0'+(good[0][9]-'0'+1)%10)
	var b Builder
	for _, n := range []string{good[0], good[1], good[1], bad, "12345", good[2]} {
		b.Add(n)
	}
	if b.Invalid() != 2 {
		t.Errorf("Invalid = %d, want 2", b.Invalid())
	}
	s := b.Set()
	if s.Len() != 3 {
		t.Errorf("Len = %d, want 3 (duplicates collapse)", s.Len())
	}
	if s.Contains(bad) {
		t.Error("a number with a wrong check digit is in the set")
	}
}

func TestUnionAndStrings(t *testing.T) {
	a := validNumbers(t, 200, 4)
	b := append(validNumbers(t, 200, 5), a[:50]...)
	u := Of(a...).Union(Of(b...))
	want := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(a), b...))))
	if got := u.Strings(); !slices.Equal(got, want) {
		t.Fatalf("Union().Strings() has %d numbers, want %d", len(got), len(want))
	}
	if got := Of().Union(Of(a...)).Len(); got != len(slices.Compact(slices.Sorted(slices.Values(a)))) {
		t.Errorf("empty ∪ a has %d", got)
	}
	// Leading zeros survive the round trip.
	z, _, _ := cdm.NHSNumberFromSerial(1234)
	if got := Of(z).Strings(); len(got) != 1 || got[0] != z {
		t.Errorf("Strings() = %v, want [%s]", got, z)
	}
}

func TestIntersect(t *testing.T) {
	a := validNumbers(t, 300, 7)
	b := append(validNumbers(t, 300, 8), a[100:150]...)
	inA := map[string]bool{}
	for _, n := range a {
		inA[n] = true
	}
	var want []string
	for _, n := range b {
		if inA[n] {
			want = append(want, n)
		}
	}
	want = slices.Compact(slices.Sorted(slices.Values(want)))
	if len(want) < 50 {
		t.Fatalf("only %d numbers in common; the test proves little", len(want))
	}
	for _, tc := range []struct {
		name string
		got  *Set
		want []string
	}{
		{"a ∩ b", Of(a...).Intersect(Of(b...)), want},
		{"b ∩ a", Of(b...).Intersect(Of(a...)), want},
		{"a ∩ a", Of(a...).Intersect(Of(a...)), Of(a...).Strings()},
		{"a ∩ empty", Of(a...).Intersect(Of()), nil},
		{"nil ∩ a", (*Set)(nil).Intersect(Of(a...)), nil},
		{"a ∩ nil", Of(a...).Intersect(nil), nil},
	} {
		if got := tc.got.Strings(); len(got) != len(tc.want) || (len(got) > 0 && !slices.Equal(got, tc.want)) {
			t.Errorf("%s has %d numbers, want %d", tc.name, len(got), len(tc.want))
		}
	}
}

func TestReadNDOP(t *testing.T) {
	nums := validNumbers(t, 4, 6)
	tests := []struct {
		name, src   string
		wantLen     int
		wantInvalid int64
		wantErr     string
	}{
		{"plain", "nhs_number\n" + strings.Join(nums, "\n") + "\n", 4, 0, ""},
		{"extra columns", "recorded,nhs_number\n2024-01-01," + nums[0] + "\n2024-01-02," + nums[1] + "\n", 2, 0, ""},
		{"invalid counted", "nhs_number\n" + nums[0] + "\n0000000001\nnot-a-number\n", 1, 2, ""},
		{"header only", "nhs_number\n", 0, 0, ""},
		{"empty", "", 0, 0, "empty file"},
		{"wrong header", "nhs\n" + nums[0] + "\n", 0, 0, "no nhs_number column"},
		{"short row", "a,nhs_number\n" + nums[0] + "\n", 0, 0, "line 2: no nhs_number field"},
		{"bad quoting", "nhs_number\n\"" + nums[0] + "\n", 0, 0, "malformed CSV"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, invalid, err := ReadNDOP(strings.NewReader(tt.src))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				for _, n := range nums {
					if strings.Contains(err.Error(), n) {
						t.Errorf("error quotes an NHS number: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Len() != tt.wantLen || invalid != tt.wantInvalid {
				t.Errorf("Len %d invalid %d, want %d %d", s.Len(), invalid, tt.wantLen, tt.wantInvalid)
			}
		})
	}
	p := filepath.Join(t.TempDir(), "ndop.csv")
	os.WriteFile(p, []byte("nhs_number\n"+nums[0]+"\n"), 0o644)
	s, _, err := ReadNDOPFile(p)
	if err != nil || !s.Contains(nums[0]) {
		t.Fatalf("ReadNDOPFile: %v", err)
	}
	if _, _, err := ReadNDOPFile(p + ".absent"); err == nil {
		t.Error("missing file accepted")
	}
}

func BenchmarkContains(b *testing.B) {
	nums := validNumbers(b, 1_000_000, 7)
	s := Of(nums...)
	probe := validNumbers(b, 1024, 8)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.Contains(probe[i%len(probe)])
	}
	b.ReportMetric(float64(s.Len()*8)/1e6, "MB/set")
}
