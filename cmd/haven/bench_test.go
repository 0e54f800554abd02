package main

import (
	"strings"
	"testing"
)

// TestBenchNationalRefusesBadOptions checks that wrong options are named
// before anything starts.
func TestBenchNationalRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--scales", "1.5G"}, `--scales: scale "1.5G": want a number of patients such as 1.5M, 60M or 250k`},
		{[]string{"--practices", "5"}, "5 practices and 230 trusts: want at least 20 practices and a trust"},
		{[]string{"--scales", "100", "--practices", "200"}, "scale 100: fewer patients than practices"},
		{[]string{"--dials", "0"}, "dials 0: want at least 1"},
	} {
		_, stderr, code := runHaven(t, append([]string{"bench", "national"}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("haven bench national %v: exit %d, stderr %q; want an error saying %q", tc.args, code, stderr, tc.want)
		}
		if strings.Contains(stderr, "files and logs are in") {
			t.Errorf("haven bench national %v names a directory it removed: %q", tc.args, stderr)
		}
	}
}
