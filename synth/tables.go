package synth

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"strconv"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/compress"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"

	"github.com/havenhealth/haven/cdm"
)

// Rows are buffered in Arrow builders and written a row group at a time,
// so a site of any size holds at most one row group per table in memory.
const rowGroupRows = 1 << 17

// row is one row of a CDM table. R is the row type itself, so that a sink
// can corrupt a copy's NHS number without reflection.
type row[R any] interface {
	nhsNumber() string
	withNHS(nhs string) R
	afterDeath() bool
	appendTo(b *array.RecordBuilder)
}

func appendString(b array.Builder, s string) {
	b.(*array.StringBuilder).Append(s)
}

func appendNullableString(b array.Builder, s string) {
	if s == "" {
		b.AppendNull()
		return
	}
	b.(*array.StringBuilder).Append(s)
}

func appendDate(b array.Builder, d day) {
	if d == noDay {
		b.AppendNull()
		return
	}
	b.(*array.Date32Builder).Append(arrow.Date32(d))
}

// lsoaCode formats LSOA number n as its 2011/2021 code, E01 and six digits.
func lsoaCode(n int) string {
	if n <= 0 {
		return ""
	}
	var buf [9]byte
	copy(buf[:], "E01000000")
	s := strconv.AppendInt(buf[:0:0], int64(n), 10)
	copy(buf[9-len(s):], s)
	return string(buf[:])
}

// patientRow is one row of the patient table.
type patientRow struct {
	nhs         string
	birth       day
	sex         string
	death       day
	lsoa        int
	practiceODS string
}

func (r patientRow) nhsNumber() string             { return r.nhs }
func (r patientRow) withNHS(nhs string) patientRow { r.nhs = nhs; return r }
func (r patientRow) afterDeath() bool              { return false }
func (r patientRow) appendTo(b *array.RecordBuilder) {
	appendString(b.Field(0), r.nhs)
	appendDate(b.Field(1), r.birth)
	appendString(b.Field(2), r.sex)
	appendDate(b.Field(3), r.death)
	appendNullableString(b.Field(4), lsoaCode(r.lsoa))
	appendNullableString(b.Field(5), r.practiceODS)
}

// registrationRow is one row of the registration table.
type registrationRow struct {
	nhs        string
	ods        string
	start, end day
}

func (r registrationRow) nhsNumber() string                  { return r.nhs }
func (r registrationRow) withNHS(nhs string) registrationRow { r.nhs = nhs; return r }
func (r registrationRow) afterDeath() bool                   { return false }
func (r registrationRow) appendTo(b *array.RecordBuilder) {
	appendString(b.Field(0), r.nhs)
	appendString(b.Field(1), r.ods)
	appendDate(b.Field(2), r.start)
	appendDate(b.Field(3), r.end)
}

// eventRow is one row of the clinical_event table.
type eventRow struct {
	nhs string
	gpEvent
}

func (r eventRow) nhsNumber() string           { return r.nhs }
func (r eventRow) withNHS(nhs string) eventRow { r.nhs = nhs; return r }
func (r eventRow) afterDeath() bool            { return r.late }
func (r eventRow) appendTo(b *array.RecordBuilder) {
	appendString(b.Field(0), r.nhs)
	appendDate(b.Field(1), r.date)
	appendString(b.Field(2), r.code)
	if math.IsNaN(r.value) {
		b.Field(3).AppendNull()
	} else {
		b.Field(3).(*array.Float64Builder).Append(r.value)
	}
}

// medicationRow is one row of the medication table.
type medicationRow struct {
	nhs string
	gpIssue
}

func (r medicationRow) nhsNumber() string                { return r.nhs }
func (r medicationRow) withNHS(nhs string) medicationRow { r.nhs = nhs; return r }
func (r medicationRow) afterDeath() bool                 { return r.late }
func (r medicationRow) appendTo(b *array.RecordBuilder) {
	appendString(b.Field(0), r.nhs)
	appendDate(b.Field(1), r.date)
	appendString(b.Field(2), r.code)
}

// optOutRow is one row of the opt_out table.
type optOutRow struct {
	nhs      string
	kind     string
	recorded day
}

func (r optOutRow) nhsNumber() string            { return r.nhs }
func (r optOutRow) withNHS(nhs string) optOutRow { r.nhs = nhs; return r }
func (r optOutRow) afterDeath() bool             { return false }
func (r optOutRow) appendTo(b *array.RecordBuilder) {
	appendString(b.Field(0), r.nhs)
	appendString(b.Field(1), r.kind)
	appendDate(b.Field(2), r.recorded)
}

// episodeRow is one row of the apc_episode table.
type episodeRow struct {
	nhs string
	id  string
	hospitalEpisode
}

func (r episodeRow) nhsNumber() string             { return r.nhs }
func (r episodeRow) withNHS(nhs string) episodeRow { r.nhs = nhs; return r }
func (r episodeRow) afterDeath() bool              { return false }
func (r episodeRow) appendTo(b *array.RecordBuilder) {
	appendString(b.Field(0), r.nhs)
	appendString(b.Field(1), r.id)
	appendDate(b.Field(2), r.admission)
	appendDate(b.Field(3), r.discharge)
	appendString(b.Field(4), r.method)
	appendString(b.Field(5), r.diagnosis)
	lb := b.Field(6).(*array.ListBuilder)
	lb.Append(true)
	vb := lb.ValueBuilder().(*array.StringBuilder)
	for _, p := range r.procedures {
		vb.Append(p)
	}
}

// attendanceRow is one row of the ae_attendance table.
type attendanceRow struct {
	nhs string
	aeVisit
}

func (r attendanceRow) nhsNumber() string                { return r.nhs }
func (r attendanceRow) withNHS(nhs string) attendanceRow { r.nhs = nhs; return r }
func (r attendanceRow) afterDeath() bool                 { return false }
func (r attendanceRow) appendTo(b *array.RecordBuilder) {
	appendString(b.Field(0), r.nhs)
	appendDate(b.Field(1), r.arrival)
	appendNullableString(b.Field(2), r.diagnosis)
}

// tableFile is one Parquet file being written with a CDM table's schema.
type tableFile struct {
	table string
	rel   string // slash-separated, relative to the output directory
	f     *os.File
	buf   *bufio.Writer
	w     *pqarrow.FileWriter
	b     *array.RecordBuilder
}

// createTableFile creates dir/rel for table t.
func createTableFile(dir, rel string, t cdm.Table) (*tableFile, error) {
	abs := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", rel, err)
	}
	f, err := os.Create(abs)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", rel, err)
	}
	buf := bufio.NewWriterSize(f, 1<<20)
	schema := t.Schema()
	props := parquet.NewWriterProperties(
		// Snappy, not zstd: the zstd codec of Arrow v17 builds a fresh
		// encoder for every page, which is slow and allocates heavily.
		parquet.WithCompression(compress.Codecs.Snappy),
		parquet.WithMaxRowGroupLength(rowGroupRows),
		parquet.WithDictionaryDefault(true),
		// Nearly unique columns get no dictionary. Besides saving the work,
		// this keeps files byte-for-byte reproducible: when a dictionary
		// outgrows its page limit the writer falls back to plain pages, and
		// Arrow v17 records the two page encodings from a map, in random
		// order.
		parquet.WithDictionaryFor(cdm.ColNHSNumber, false),
		parquet.WithDictionaryFor(cdm.ColEpisodeID, false),
		parquet.WithDictionaryPageSizeLimit(8<<20),
		parquet.WithCreatedBy("haven synth"),
	)
	w, err := pqarrow.NewFileWriter(schema, buf, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("create %s: %w", rel, err)
	}
	return &tableFile{
		table: t.Name, rel: rel, f: f, buf: buf, w: w,
		b: array.NewRecordBuilder(memory.DefaultAllocator, schema),
	}, nil
}

// flush writes the buffered rows as one row group.
func (tf *tableFile) flush() error {
	if tf.b.Field(0).Len() == 0 {
		return nil
	}
	rec := tf.b.NewRecord()
	defer rec.Release()
	if err := tf.w.Write(rec); err != nil {
		return fmt.Errorf("write %s: %w", tf.rel, err)
	}
	return nil
}

// close flushes and closes the file and returns its size in bytes.
func (tf *tableFile) close() (int64, error) {
	defer tf.b.Release()
	if err := tf.flush(); err != nil {
		tf.f.Close()
		return 0, err
	}
	if err := tf.w.Close(); err != nil {
		tf.f.Close()
		return 0, fmt.Errorf("close %s: %w", tf.rel, err)
	}
	if err := tf.buf.Flush(); err != nil {
		tf.f.Close()
		return 0, fmt.Errorf("write %s: %w", tf.rel, err)
	}
	st, err := tf.f.Stat()
	if err != nil {
		tf.f.Close()
		return 0, fmt.Errorf("close %s: %w", tf.rel, err)
	}
	if err := tf.f.Close(); err != nil {
		return 0, fmt.Errorf("close %s: %w", tf.rel, err)
	}
	return st.Size(), nil
}

// abort closes the file after a failure; what was written is left for
// the caller to remove with the rest of the output.
func (tf *tableFile) abort() {
	tf.b.Release()
	tf.f.Close()
}

// sink feeds rows of one table into its file, adding the deliberate
// defects the file is meant to have and counting them.
type sink[R row[R]] struct {
	file        *tableFile
	dirty       *rng
	invalidRate float64 // share of rows whose NHS number is spoilt
	dupRate     float64 // share of rows written twice
	stats       File
}

func newSink[R row[R]](file *tableFile, dirty *rng, invalidRate, dupRate float64) *sink[R] {
	return &sink[R]{file: file, dirty: dirty, invalidRate: invalidRate, dupRate: dupRate,
		stats: File{Path: file.rel}}
}

// add writes r, perhaps with a spoilt NHS number, perhaps twice.
func (s *sink[R]) add(r R) error {
	invalid := false
	if s.invalidRate > 0 && s.dirty.chance(s.invalidRate) {
		r = r.withNHS(spoilNHSNumber(s.dirty, r.nhsNumber()))
		invalid = true
	}
	copies := 1
	if s.dupRate > 0 && s.dirty.chance(s.dupRate) {
		copies = 2
		s.stats.DuplicateRows++
	}
	for range copies {
		r.appendTo(s.file.b)
		s.stats.Rows++
		if invalid {
			s.stats.InvalidNHSNumbers++
		}
		if r.afterDeath() {
			s.stats.EventsAfterDeath++
		}
	}
	if s.file.b.Field(0).Len() >= rowGroupRows {
		return s.file.flush()
	}
	return nil
}

// spoilNHSNumber returns nhs made invalid the way real feeds get it wrong:
// mostly a wrong check digit, sometimes a digit dropped or added.
func spoilNHSNumber(r *rng, nhs string) string {
	switch k := r.IntN(10); {
	case k < 7:
		// Any other final digit fails: a number has one check digit.
		d := (int(nhs[9]-'0') + 1 + r.IntN(9)) % 10
		return nhs[:9] + strconv.Itoa(d)
	case k < 9:
		return nhs[:9]
	default:
		return nhs + strconv.Itoa(r.IntN(10))
	}
}

// siteFilePath returns the slash-separated path of a site's table file.
func siteFilePath(ods, table string) string {
	return path.Join(SitesDir, ods, table+".parquet")
}
