package synth

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/havenhealth/haven/cdm"
)

func TestLoadNetwork(t *testing.T) {
	for _, tc := range []struct {
		file string
		want string // error substring; "" for a good file
	}{
		{"good.yaml", ""},
		{"unknown_field.bad.yaml", "field colour not found"},
		{"missing_table.bad.yaml", "a gp holds"},
		{"escaping_path.bad.yaml", "leaves the network directory"},
		{"absolute_path.bad.yaml", "want a relative"},
		{"wrong_version.bad.yaml", "format_version 2"},
		{"dangling_trust.bad.yaml", "RZZ is not a trust"},
		{"bad_kind.bad.yaml", `unknown site kind "clinic"`},
		{"bad_date.bad.yaml", "want YYYY-MM-DD"},
		{"bad_scale.bad.yaml", "small, icb, national"},
		{"duplicate_site.bad.yaml", "listed twice"},
		{"absent.yaml", "no such file"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", "network", tc.file)
			n, err := LoadNetwork(path)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n.Dir() != filepath.Dir(path) {
				t.Errorf("Dir() = %q", n.Dir())
			}
			gp, ok := n.Site("G80001")
			if !ok || gp.Kind != cdm.KindGP || gp.Files[cdm.TablePatient].InvalidNHSNumbers != 1 {
				t.Errorf("G80001: %+v", gp)
			}
			if got, want := n.Path(gp.Files[cdm.TablePatient].Path), filepath.Join("testdata", "network", "sites", "G80001", "patient.parquet"); got != want {
				t.Errorf("Path = %q, want %q", got, want)
			}
			if got := n.ReferenceDate.String(); got != "2026-03-31" {
				t.Errorf("reference date %s", got)
			}
			if len(n.SitesOfKind(cdm.KindTrust)) != 1 {
				t.Errorf("trusts: %v", n.SitesOfKind(cdm.KindTrust))
			}
		})
	}
}

func TestNetworkRoundTrip(t *testing.T) {
	want, err := LoadNetwork(filepath.Join("testdata", "network", "good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := writeNetwork(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := LoadNetwork(filepath.Join(dir, NetworkFile))
	if err != nil {
		t.Fatal(err)
	}
	got.dir, want.dir = "", ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip changed the network:\n%+v\nwant\n%+v", got, want)
	}
}
