package synth

import (
	"strings"
	"testing"
)

func TestParseScale(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Scale
		wantErr bool
	}{
		{"small", ScaleSmall, false},
		{"icb", ScaleICB, false},
		{"national", ScaleNational, false},
		{"", "", true},
		{"Small", "", true},
		{"region", "", true},
	} {
		got, err := ParseScale(tc.in)
		if tc.wantErr {
			if err == nil || !strings.Contains(err.Error(), "small, icb, national") || !strings.Contains(err.Error(), tc.in) {
				t.Errorf("ParseScale(%q) error %v, want one naming the input and listing the scales", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseScale(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestScaleShapes(t *testing.T) {
	for _, sc := range Scales() {
		sh, err := sc.shape()
		if err != nil {
			t.Fatal(err)
		}
		if sh.practices <= 0 || sh.trusts <= 0 || sh.population < sh.practices*minListSize {
			t.Errorf("%s: implausible shape %+v", sc, sh)
		}
	}
	if _, err := Scale("county").shape(); err == nil {
		t.Error("unknown scale has a shape")
	}
}
