package release

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

func signedTable(t *testing.T) ([]byte, ed25519.PrivateKey) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	tab := fixture()
	tab.Meta = Meta{RunID: "run-1", DefinitionID: "bp", DefinitionVersion: 2,
		DefinitionHash: strings.Repeat("a", 64), Purpose: "commissioning", ReleasedAt: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC),
		MinCellCount: 8, RoundingBase: 5, SitesExpected: 4, SitesAnswered: 4, PopulationExpected: 1000, PopulationAnswered: 1000,
		Parameters: map[string]string{"index_date": "2024-04-01"}}
	b, err := Encode(tab)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Sign(b, key)
	if err != nil {
		t.Fatal(err)
	}
	return s, key
}

// rewrite decodes a signed stream, lets edit change its schema metadata or
// its records, and encodes it again keeping the signature entries: what
// an attacker who alters a table without the key can produce.
func rewrite(t *testing.T, b []byte, editMeta func(k, v string) string, editRec func(arrow.Record) arrow.Record, chunk int64) []byte {
	t.Helper()
	rdr, err := ipc.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer rdr.Release()
	md := rdr.Schema().Metadata()
	vals := slicesClone(md.Values())
	for i, k := range md.Keys() {
		if editMeta != nil {
			vals[i] = editMeta(k, vals[i])
		}
	}
	nmd := arrow.NewMetadata(md.Keys(), vals)
	schema := arrow.NewSchema(rdr.Schema().Fields(), &nmd)
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	for rdr.Next() {
		rec := array.NewRecord(schema, rdr.Record().Columns(), rdr.Record().NumRows())
		if editRec != nil {
			rec = editRec(rec)
		}
		for off := int64(0); off < rec.NumRows(); off += chunk {
			part := rec.NewSlice(off, min(off+chunk, rec.NumRows()))
			if err := w.Write(part); err != nil {
				t.Fatal(err)
			}
			part.Release()
		}
	}
	w.Close()
	return buf.Bytes()
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// setFirstCount replaces the first released value of the first count
// column with n.
func setFirstCount(n int64) func(arrow.Record) arrow.Record {
	return func(rec arrow.Record) arrow.Record {
		cols := slicesCloneArr(rec.Columns())
		for c, col := range cols {
			ic, ok := col.(*array.Int64)
			if !ok {
				continue
			}
			b := array.NewInt64Builder(memory.DefaultAllocator)
			done := false
			for i := range ic.Len() {
				switch {
				case ic.IsNull(i):
					b.AppendNull()
				case !done:
					b.Append(n)
					done = true
				default:
					b.Append(ic.Value(i))
				}
			}
			cols[c] = b.NewArray()
			break
		}
		return array.NewRecord(rec.Schema(), cols, rec.NumRows())
	}
}

func slicesCloneArr(s []arrow.Array) []arrow.Array { return append([]arrow.Array(nil), s...) }

func TestSignVerify(t *testing.T) {
	signed, key := signedTable(t)
	pub := key.Public().(ed25519.PublicKey)
	_, other, _ := ed25519.GenerateKey(nil)
	plain := fixture()
	plain.Meta = Meta{RunID: "run-1"}
	unsigned, err := Encode(plain)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		pub  ed25519.PublicKey
		want string // substring of the error; "" to pass
	}{
		{name: "as signed", b: signed, pub: pub},
		// DoGet re-chunks the stored stream; the signature is over the
		// content, so a re-chunked copy still verifies.
		{name: "re-chunked", b: rewrite(t, signed, nil, nil, 2), pub: pub},
		{name: "other key", b: signed, pub: other.Public().(ed25519.PublicKey), want: "not by the given key"},
		{name: "unsigned", b: unsigned, pub: pub, want: "not signed"},
		{name: "parameter changed", pub: pub, want: "provenance",
			b: rewrite(t, signed, func(k, v string) string {
				if k == keyParams {
					return strings.Replace(v, "2024-04-01", "2023-04-01", 1)
				}
				return v
			}, nil, 100)},
		{name: "threshold changed", pub: pub, want: "provenance",
			b: rewrite(t, signed, func(k, v string) string {
				if k == keyMinCount {
					return "10"
				}
				return v
			}, nil, 100)},
		{name: "count changed", pub: pub, want: "rows differ",
			b: rewrite(t, signed, nil, setFirstCount(999), 100)},
		{name: "digest replaced", pub: pub, want: "signature or its digests were altered",
			b: rewrite(t, signed, func(k, v string) string {
				if k == keyRowsHash {
					return strings.Repeat("0", 64)
				}
				return v
			}, setFirstCount(999), 100)},
		{name: "not arrow", b: []byte("row_kind,patients\ncell,5\n"), pub: pub, want: "not a readable Arrow IPC stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := Verify(tc.b, tc.pub)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tab.Meta.RunID != "run-1" || tab.Meta.Parameters["index_date"] != "2024-04-01" || len(tab.Rows) == 0 {
					t.Errorf("verified table %+v", tab.Meta)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// A signed table still reads as a table, provenance intact.
func TestSignedReads(t *testing.T) {
	signed, _ := signedTable(t)
	tab, err := ReadIPC(bytes.NewReader(signed))
	if err != nil {
		t.Fatal(err)
	}
	if tab.Meta.DefinitionID != "bp" || tab.Meta.MinCellCount != 8 {
		t.Errorf("meta %+v", tab.Meta)
	}
}

// Every single-byte flip of a signed stream is refused or leaves the
// decoded table and provenance exactly as signed (a flip in Arrow's
// padding changes no content).
func TestEveryByteFlip(t *testing.T) {
	signed, key := signedTable(t)
	pub := key.Public().(ed25519.PublicKey)
	want, err := Verify(signed, pub)
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for i := range signed {
		b := slicesCloneBytes(signed)
		b[i] ^= 0x01
		got, err := Verify(b, pub)
		if err != nil {
			refused++
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("flip at byte %d of %d verified with different content", i, len(signed))
		}
	}
	t.Logf("%d of %d single-byte flips refused; the rest changed no content", refused, len(signed))
	if refused == 0 {
		t.Fatal("no flip was refused")
	}
}

func slicesCloneBytes(b []byte) []byte { return append([]byte(nil), b...) }

func TestKeyFiles(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	priv, pub, err := MarshalKeys(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	k, err := LoadPrivateKey(write("k.pem", priv))
	if err != nil || !k.Equal(key) {
		t.Fatalf("private key: %v", err)
	}
	p, err := LoadPublicKey(write("p.pem", pub))
	if err != nil || !p.Equal(key.Public()) {
		t.Fatalf("public key: %v", err)
	}
	for _, tc := range []struct {
		name string
		load func(string) error
		b    []byte
		want string
	}{
		{"private: public given", func(p string) error { _, err := LoadPrivateKey(p); return err }, pub, `no PEM "PRIVATE KEY" block`},
		{"private: garbage", func(p string) error { _, err := LoadPrivateKey(p); return err }, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "k2.pem"},
		{"public: private given", func(p string) error { _, err := LoadPublicKey(p); return err }, priv, `no PEM "PUBLIC KEY" block`},
		{"missing", func(string) error { _, err := LoadPrivateKey(filepath.Join(dir, "none")); return err }, nil, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.load(write("k2.pem", tc.b))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
