package correctness

import (
	"testing"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/coordinator/release"
	"github.com/havenhealth/haven/integration/releasecheck"
	"github.com/havenhealth/haven/integration/synth"
)

type trueTable = releasecheck.TrueTable

// checkTable reports through t every problem releasecheck.Check finds.
func checkTable(t *testing.T, tab *release.Table, truth trueTable, means map[string]disclosure.ValueKind, what string) releasecheck.Stats {
	t.Helper()
	st, problems := releasecheck.Check(tab, truth, means)
	for _, p := range problems {
		t.Errorf("%s: %s", what, p)
	}
	return st
}

func readNDOP(t testing.TB, n *synth.Network) map[string]bool {
	t.Helper()
	m, err := releasecheck.ReadNDOP(n)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readCodelist(t testing.TB, bundle, name string) map[string]bool {
	t.Helper()
	m, err := releasecheck.ReadCodelist(bundle, name)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
