package connector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	connectorv1 "github.com/havenhealth/haven/proto/haven/connector/v1"
)

// fakeStream plays back a Query stream: its messages, then err (io.EOF
// if nil). Every method of the stream interface is implemented.
type fakeStream struct {
	msgs []*connectorv1.QueryResponse
	err  error
}

func (f *fakeStream) Recv() (*connectorv1.QueryResponse, error) {
	if len(f.msgs) == 0 {
		if f.err != nil {
			return nil, f.err
		}
		return nil, io.EOF
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return m, nil
}
func (f *fakeStream) Header() (metadata.MD, error) { return nil, nil }
func (f *fakeStream) Trailer() metadata.MD         { return nil }
func (f *fakeStream) CloseSend() error             { return nil }
func (f *fakeStream) Context() context.Context     { return context.Background() }
func (f *fakeStream) SendMsg(any) error {
	return errors.New("fakeStream: SendMsg is not used by the host")
}
func (f *fakeStream) RecvMsg(any) error {
	return errors.New("fakeStream: RecvMsg is not used by the host")
}

// streamOf cuts an Arrow IPC stream into chunks of size and ends it with
// QueryDone counting the bytes.
func streamOf(data []byte, size int) *fakeStream {
	f := &fakeStream{}
	for rest := data; len(rest) > 0; {
		k := min(size, len(rest))
		f.msgs = append(f.msgs, &connectorv1.QueryResponse{Part: &connectorv1.QueryResponse_ArrowIpc{ArrowIpc: bytes.Clone(rest[:k])}})
		rest = rest[k:]
	}
	f.msgs = append(f.msgs, &connectorv1.QueryResponse{Part: &connectorv1.QueryResponse_Done{Done: &connectorv1.QueryDone{Bytes: int64(len(data))}}})
	return f
}

// readStream reads a whole result off stream and returns its row count.
func readStream(t testing.TB, stream *fakeStream, q Query) (int64, error) {
	t.Helper()
	c := &grpcClient{exited: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	res, err := c.newResult(context.Background(), ctx, cancel, stream, q.withDefaults())
	if err != nil {
		return 0, err
	}
	defer res.Close()
	for res.Next() {
		// Touch every value, as a caller would: a record that passed
		// validation must be safe to read.
		for _, col := range res.Record().Columns() {
			for i := range col.Len() {
				_ = col.ValueStr(i)
			}
		}
	}
	return res.Rows(), res.Err()
}

var testSchema = arrow.NewSchema([]arrow.Field{
	{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "x", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "b", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	{Name: "d", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
	{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "y", Type: arrow.BinaryTypes.Binary, Nullable: true},
	{Name: "l", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
}, nil)

// validStream is an Arrow IPC stream of every result type, in batches.
func validStream(t testing.TB, batches, rows int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(testSchema))
	b := array.NewRecordBuilder(memory.DefaultAllocator, testSchema)
	defer b.Release()
	for k := range batches {
		for i := range rows {
			v := k*rows + i
			if v%7 == 3 {
				for _, f := range b.Fields() {
					f.AppendNull()
				}
				continue
			}
			b.Field(0).(*array.Int64Builder).Append(int64(v))
			b.Field(1).(*array.Float64Builder).Append(float64(v) / 3)
			b.Field(2).(*array.BooleanBuilder).Append(v%2 == 0)
			b.Field(3).(*array.Date32Builder).Append(arrow.Date32(19000 + v))
			b.Field(4).(*array.StringBuilder).Append(fmt.Sprint("code-", v))
			b.Field(5).(*array.BinaryBuilder).Append([]byte{byte(v), 1, 2})
			lb := b.Field(6).(*array.ListBuilder)
			lb.Append(true)
			for j := range v % 3 {
				lb.ValueBuilder().(*array.StringBuilder).Append(fmt.Sprint("p", j))
			}
		}
		rec := b.NewRecord()
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestResultReadsValidStream(t *testing.T) {
	data := validStream(t, 3, 50)
	for _, chunk := range []int{1, 7, 64, 1 << 20} {
		t.Run(fmt.Sprint("chunks of ", chunk), func(t *testing.T) {
			rows, err := readStream(t, streamOf(data, chunk), Query{})
			if err != nil || rows != 150 {
				t.Fatalf("rows %d, err %v; want 150 rows", rows, err)
			}
		})
	}
}

// TestResultSurvivesCorruption flips each byte of a valid stream in turn,
// and cuts it at each length. Nothing may panic; a cut stream must fail;
// a corrupted one must fail or read cleanly.
func TestResultSurvivesCorruption(t *testing.T) {
	data := validStream(t, 1, 4)
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0xA5
		_, _ = readStream(t, streamOf(bad, 100), Query{MaxBytes: 1 << 20})
	}
	for n := range len(data) {
		stream := streamOf(data[:n], 100)
		if _, err := readStream(t, stream, Query{}); err == nil {
			t.Fatalf("stream cut at %d of %d bytes read without error", n, len(data))
		}
	}
}

func FuzzResultStream(f *testing.F) {
	f.Add(validStream(f, 2, 5))
	f.Add(validStream(f, 1, 0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = readStream(t, streamOf(data, 64), Query{MaxBytes: 1 << 20})
	})
}

func TestResultLimits(t *testing.T) {
	data := validStream(t, 4, 100)
	if _, err := readStream(t, streamOf(data, 1000), Query{MaxRows: 400}); err != nil {
		t.Errorf("400 rows under a 400-row limit: %v", err)
	}
	_, err := readStream(t, streamOf(data, 1000), Query{MaxRows: 399})
	if le, ok := errors.AsType[*LimitError](err); !ok || le.Limit != LimitRows || le.Max != 399 {
		t.Errorf("399-row limit: err = %v", err)
	}
	_, err = readStream(t, streamOf(data, 1000), Query{MaxBytes: int64(len(data)) - 1})
	if le, ok := errors.AsType[*LimitError](err); !ok || le.Limit != LimitBytes {
		t.Errorf("byte limit one short: err = %v", err)
	}
	if _, err := readStream(t, streamOf(data, 1000), Query{MaxBytes: int64(len(data))}); err != nil {
		t.Errorf("byte limit exact: %v", err)
	}
}

func TestResultReportsPluginError(t *testing.T) {
	data := validStream(t, 2, 10)
	stream := streamOf(data[:len(data)/2], 100)
	stream.msgs = stream.msgs[:len(stream.msgs)-1]           // no QueryDone
	stream.err = status.Error(codes.Unknown, "disk on fire") // as gRPC delivers a plugin's error
	_, err := readStream(t, stream, Query{})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v, want the plugin's error", err)
	}
	if errors.Is(err, ErrMalformedResult) {
		t.Errorf("err = %v: a plugin error is not a malformed stream", err)
	}
}

func TestCompareSchemas(t *testing.T) {
	i64, s := arrow.PrimitiveTypes.Int64, arrow.BinaryTypes.String
	schema := func(fs ...arrow.Field) *arrow.Schema { return arrow.NewSchema(fs, nil) }
	md := arrow.NewMetadata([]string{"k"}, []string{"v"})
	tests := []struct {
		name      string
		got, want *arrow.Schema
		wantErr   string
	}{
		{"equal", schema(arrow.Field{Name: "a", Type: i64}), schema(arrow.Field{Name: "a", Type: i64}), ""},
		{"nullability and metadata ignored", schema(arrow.Field{Name: "a", Type: i64, Nullable: true}),
			arrow.NewSchema([]arrow.Field{{Name: "a", Type: i64}}, &md), ""},
		{"list element name ignored", schema(arrow.Field{Name: "l", Type: arrow.ListOfField(arrow.Field{Name: "l", Type: s, Nullable: true})}),
			schema(arrow.Field{Name: "l", Type: arrow.ListOf(s)}), ""},
		{"type", schema(arrow.Field{Name: "a", Type: s}), schema(arrow.Field{Name: "a", Type: i64}), `column 1 is "a" utf8, want "a" int64`},
		{"name", schema(arrow.Field{Name: "b", Type: i64}), schema(arrow.Field{Name: "a", Type: i64}), `column 1 is "b"`},
		{"count", schema(arrow.Field{Name: "a", Type: i64}), schema(arrow.Field{Name: "a", Type: i64}, arrow.Field{Name: "b", Type: i64}), "1 columns, want 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := compareSchemas(tt.got, tt.want)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("err = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("err = %v, want it to say %q", err, tt.wantErr)
			}
		})
	}
}
