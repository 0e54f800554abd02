package synth

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"
)

// small is the small network, generated at most once per test binary by
// loadSmall and removed by TestMain. Tests only read it.
var small struct {
	once sync.Once
	dir  string
	n    *Network
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if small.dir != "" {
		os.RemoveAll(small.dir)
	}
	os.Exit(code)
}

func loadSmall(t *testing.T) *Network {
	t.Helper()
	small.once.Do(func() {
		small.dir, small.err = os.MkdirTemp("", "synth-small-")
		if small.err != nil {
			return
		}
		out := filepath.Join(small.dir, "net")
		if _, small.err = Generate(context.Background(), Config{Out: out, Scale: ScaleSmall, Seed: 1}); small.err != nil {
			return
		}
		small.n, small.err = LoadNetwork(filepath.Join(out, NetworkFile))
	})
	if small.err != nil {
		t.Fatalf("generate small network: %v", small.err)
	}
	return small.n
}

// readParquet reads a whole Parquet file into an Arrow table.
func readParquet(t testing.TB, path string) arrow.Table {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pf, err := file.NewParquetReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 1 << 16}, memory.DefaultAllocator)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	t.Cleanup(tbl.Release)
	return tbl
}

// parquetSchema returns the Arrow schema a Parquet file declares,
// including the file's key-value metadata.
func parquetSchema(t testing.TB, path string) *arrow.Schema {
	t.Helper()
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	s, err := fr.Schema()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return s
}

// sameSchema compares field names, types and nullability, and the CDM
// metadata, ignoring metadata Parquet readers add.
func sameSchema(got, want *arrow.Schema) bool {
	if got.NumFields() != want.NumFields() {
		return false
	}
	for i, w := range want.Fields() {
		g := got.Field(i)
		if g.Name != w.Name || !arrow.TypeEqual(g.Type, w.Type) || g.Nullable != w.Nullable {
			return false
		}
	}
	for i, k := range want.Metadata().Keys() {
		if v, ok := got.Metadata().GetValue(k); !ok || v != want.Metadata().Values()[i] {
			return false
		}
	}
	return true
}

// readSiteTable reads table of site s.
func readSiteTable(t testing.TB, n *Network, s Site, table string) arrow.Table {
	t.Helper()
	f, ok := s.Files[table]
	if !ok {
		t.Fatalf("site %s has no %s file", s.ODS, table)
	}
	return readParquet(t, n.Path(f.Path))
}

func column(t testing.TB, tbl arrow.Table, name string) *arrow.Chunked {
	t.Helper()
	idx := tbl.Schema().FieldIndices(name)
	if len(idx) != 1 {
		t.Fatalf("no column %s in %s", name, tbl.Schema())
	}
	return tbl.Column(idx[0]).Data()
}

// strs returns a string column; nulls are "".
func strs(t testing.TB, tbl arrow.Table, name string) []string {
	t.Helper()
	var out []string
	for _, c := range column(t, tbl, name).Chunks() {
		a := c.(*array.String)
		for i := range a.Len() {
			out = append(out, a.Value(i))
		}
	}
	return out
}

// dates returns a date column; nulls are noDay.
func dates(t testing.TB, tbl arrow.Table, name string) []day {
	t.Helper()
	var out []day
	for _, c := range column(t, tbl, name).Chunks() {
		a := c.(*array.Date32)
		for i := range a.Len() {
			if a.IsNull(i) {
				out = append(out, noDay)
			} else {
				out = append(out, day(a.Value(i)))
			}
		}
	}
	return out
}

// floats returns a float column; nulls are reported in the second slice.
func floats(t testing.TB, tbl arrow.Table, name string) ([]float64, []bool) {
	t.Helper()
	var out []float64
	var null []bool
	for _, c := range column(t, tbl, name).Chunks() {
		a := c.(*array.Float64)
		for i := range a.Len() {
			out = append(out, a.Value(i))
			null = append(null, a.IsNull(i))
		}
	}
	return out, null
}

// lists returns a list<string> column.
func lists(t testing.TB, tbl arrow.Table, name string) [][]string {
	t.Helper()
	var out [][]string
	for _, c := range column(t, tbl, name).Chunks() {
		a := c.(*array.List)
		vals := a.ListValues().(*array.String)
		offs := a.Offsets()
		for i := range a.Len() {
			var l []string
			for j := offs[i]; j < offs[i+1]; j++ {
				l = append(l, vals.Value(int(j)))
			}
			out = append(out, l)
		}
	}
	return out
}
