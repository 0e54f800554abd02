package leakcheck

import (
	"crypto/hkdf"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/havenhealth/haven/node/nodetest"
	"github.com/havenhealth/haven/node/pseudonym"
)

func TestMain(m *testing.M) {
	code := m.Run()
	nodetest.Cleanup()
	os.Exit(code)
}

// TestScan plants each kind of needle, and near misses, in files and
// checks the scanner finds exactly the planted ones.
func TestScan(t *testing.T) {
	n := nodetest.Network(t)
	site := n.Sites[0]
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var nhs, birth string
	err = db.QueryRow(`SELECT nhs_number, strftime(birth_date, '%Y-%m-%d') FROM read_parquet(?) WHERE birth_date IS NOT NULL LIMIT 1`,
		filepath.Join(n.Path("sites"), site.ODS, "patient.parquet")).Scan(&nhs, &birth)
	if err != nil {
		t.Fatal(err)
	}
	secretText := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	secretFile := filepath.Join(t.TempDir(), "linkage.key")
	if err := os.WriteFile(secretFile, []byte(secretText+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(t.Context(), n, secretFile)
	if err != nil {
		t.Fatal(err)
	}
	const runID = "run-LEAKCHECKTEST0000000000000"
	if err := s.AddRun(runID); err != nil {
		t.Fatal(err)
	}
	sec, err := pseudonym.NewSecret([]byte(secretText))
	if err != nil {
		t.Fatal(err)
	}
	d, err := pseudonym.NewDeriver(sec, runID)
	if err != nil {
		t.Fatal(err)
	}
	p := d.Of(nhs)
	// The network opt-out key, by the rule node/pseudonym documents.
	knet, err := hkdf.Key(sha256.New, []byte(secretText), []byte("haven.v1.network-optout"), "type1", sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Counts(); c.NHSNumbers < 1000 || c.BirthDates < 1000 || c.Pseudonyms != c.NHSNumbers {
		t.Fatalf("needles %+v: too few", c)
	}

	spaced := nhs[:3] + " " + nhs[3:6] + " " + nhs[6:]
	for _, tc := range []struct {
		name, content string
		want          []string
	}{
		{"nhs number", "patient=" + nhs + "\n", []string{"NHS number"}},
		{"spaced nhs number", "NHS No. " + spaced + ".", []string{"NHS number (spaced)"}},
		{"birth date", `{"dob":"` + birth + `"}`, []string{"birth date"}},
		{"secret", "key " + secretText, []string{"linkage secret"}},
		{"secret upper case", "KEY " + strings.ToUpper(secretText), []string{"linkage secret"}},
		{"network opt-out key hex", "k_net=" + hex.EncodeToString(knet), []string{"linkage secret"}},
		{"network opt-out key base64", "k_net=" + base64.StdEncoding.EncodeToString(knet), []string{"linkage secret"}},
		{"network opt-out key bytes", "\x00" + string(knet) + "\x00", []string{"linkage secret"}},
		{"pseudonym bytes", "\x00\x01" + string(p[:]) + "\xff", []string{"pseudonym"}},
		{"pseudonym hex", "p=" + hex.EncodeToString(p[:]), []string{"pseudonym (hex)"}},
		{"nhs number inside a longer number", "ts=1" + nhs + "9", nil},
		{"date inside a longer number", "v=1" + birth + "0", nil},
		{"clean", "run released: 157 cells, 12 withheld", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "f.log"), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			rep, err := s.Scan(dir)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, h := range rep.Hits {
				got = append(got, h.What)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("hits %v, want %v", got, tc.want)
			}
		})
	}

	if _, err := s.Scan(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("scanning a missing directory passed")
	}
	if _, err := s.Scan(t.TempDir()); err == nil {
		t.Error("scanning an empty directory passed")
	}
	s.Allow(birth)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f.log"), []byte("index_date="+birth), 0o600)
	if rep, _ := s.Scan(dir); len(rep.Hits) != 0 {
		t.Errorf("an allowed date was reported: %v", rep.Hits)
	}
}
