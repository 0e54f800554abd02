package flightsvc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/coordinator/authn"
	"github.com/havenhealth/haven/internal/arrowsafe/arrowsafetest"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// putStream plays an upload to DoPut as a node on site A81001, and keeps
// what DoPut sends back.
type putStream struct {
	ctx  context.Context
	msgs []*flight.FlightData
	sent []*flight.PutResult
}

func newPutStream(msgs []*flight.FlightData) *putStream {
	ctx := authn.NewContext(context.Background(), authn.Principal{Kind: authn.KindNode, ODS: "A81001"})
	return &putStream{ctx: ctx, msgs: msgs}
}

func (p *putStream) Recv() (*flight.FlightData, error) {
	if len(p.msgs) == 0 {
		return nil, io.EOF
	}
	m := p.msgs[0]
	p.msgs = p.msgs[1:]
	return m, nil
}

func (p *putStream) Send(r *flight.PutResult) error {
	p.sent = append(p.sent, r)
	return nil
}

func (p *putStream) Context() context.Context     { return p.ctx }
func (p *putStream) SetHeader(metadata.MD) error  { return nil }
func (p *putStream) SendHeader(metadata.MD) error { return nil }
func (p *putStream) SetTrailer(metadata.MD)       {}
func (p *putStream) SendMsg(any) error {
	return errors.New("putStream: DoPut sends with Send")
}
func (p *putStream) RecvMsg(any) error {
	return errors.New("putStream: DoPut receives with Recv")
}

// uploadsDouble hands out uploads of planSchema for task-1, and records
// how each ended.
type uploadsDouble struct {
	limits    *havenv1.UploadLimits
	committed []int64 // rows of each committed upload
	aborted   []error
}

func (u *uploadsDouble) OpenUpload(_ context.Context, _, taskID string) (Upload, error) {
	if taskID != "task-1" {
		return nil, status.Errorf(codes.NotFound, "no task %q", taskID)
	}
	return &uploadDouble{u: u}, nil
}

type uploadDouble struct{ u *uploadsDouble }

func (d *uploadDouble) Schema() *arrow.Schema         { return planSchema() }
func (d *uploadDouble) Limits() *havenv1.UploadLimits { return d.u.limits }

// Commit reads every value, as the run will: a record that passed the
// server's checks must be safe to read.
func (d *uploadDouble) Commit(_ context.Context, recs []arrow.Record, _ *havenv1.UploadReceipt) error {
	var rows int64
	for _, r := range recs {
		for _, col := range r.Columns() {
			for i := range col.Len() {
				_ = col.ValueStr(i)
			}
		}
		rows += r.NumRows()
	}
	d.u.committed = append(d.u.committed, rows)
	return nil
}

func (d *uploadDouble) Abort(_ context.Context, _ *havenv1.UploadReceipt, cause error) {
	d.u.aborted = append(d.u.aborted, cause)
}

func newTestServer() (*Server, *uploadsDouble) {
	u := &uploadsDouble{limits: &havenv1.UploadLimits{MaxRows: 1000, MaxBytes: 1 << 20, MaxBatchBytes: 64 << 10}}
	return New(u, nil, slog.New(slog.DiscardHandler)), u
}

// put runs one DoPut of msgs.
func put(s *Server, msgs []*flight.FlightData) error {
	return s.DoPut(newPutStream(msgs))
}

// with returns a copy of msgs with message i replaced by fd.
func with(msgs []*flight.FlightData, i int, fd *flight.FlightData) []*flight.FlightData {
	out := append([]*flight.FlightData(nil), msgs...)
	out[i] = fd
	return out
}

// header returns a copy of fd with header h.
func header(fd *flight.FlightData, h []byte) *flight.FlightData {
	return &flight.FlightData{FlightDescriptor: fd.FlightDescriptor, DataHeader: h, DataBody: fd.DataBody}
}

// compressedBatch is the FlightData of an LZ4-compressed batch of
// planSchema.
func compressedBatch(t *testing.T) *flight.FlightData {
	t.Helper()
	var out []*flight.FlightData
	w := flight.NewRecordWriter(sink{&out}, ipc.WithSchema(planSchema()), ipc.WithLZ4())
	b := array.NewRecordBuilder(memory.DefaultAllocator, planSchema())
	defer b.Release()
	b.Field(0).(*array.StringBuilder).Append("F")
	b.Field(1).(*array.Int64Builder).Append(1)
	b.Field(2).(*array.Int64Builder).AppendNull()
	rec := b.NewRecord()
	defer rec.Release()
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return out[1]
}

// Crafted Arrow is refused with InvalidArgument naming what was wrong;
// nothing reaches the run, and the server goes on to take a good upload.
// Buffers of planSchema's batches: 0-2 sex (validity, offsets, data),
// 3-4 patients, 5-6 top.
func TestDoPutRefusesCraftedArrow(t *testing.T) {
	good := messages(t, planSchema(), 10, 10)
	schema, batch := good[0], good[1]
	dictMeta, dictBody := arrowsafetest.DictionaryBatch(t)
	// Field node 2 is the all-null top column.
	lyingNulls := arrowsafetest.SetNode(t, batch.DataHeader, 2, 10, 3)
	tests := []struct {
		name string
		msgs []*flight.FlightData
		want string
	}{
		{"lying buffer length", with(good, 1, header(batch, arrowsafetest.SetBuffer(t, batch.DataHeader, 1, 0, 240<<30))), "runs past the body"},
		{"lying buffer offset", with(good, 1, header(batch, arrowsafetest.SetBuffer(t, batch.DataHeader, 4, 1<<40, 80))), "runs past the body"},
		{"overlapping buffers", with(good, 1, header(batch, arrowsafetest.SetBuffer(t, batch.DataHeader, 6, 0, 80))), "starts before the end"},
		{"lying field count", with(good, 0, header(schema, arrowsafetest.SetFieldCount(t, schema.DataHeader, 1<<30))), "vector of 1073741824 elements"},
		{"lying buffer count", with(good, 1, header(batch, arrowsafetest.SetBufferCount(t, batch.DataHeader, 1<<28))), "vector of 268435456 elements"},
		{"lying body length", with(good, 1, header(batch, arrowsafetest.SetBodyLength(t, batch.DataHeader, 240<<30))), "the metadata says"},
		{"lying row count", with(good, 1, header(batch, arrowsafetest.SetNode(t, batch.DataHeader, 1, 1<<40, 0))), "malformed"},
		{"lying null count", with(good, 1, header(batch, lyingNulls)), "null count 3, but the validity bitmap has 10 nulls"},
		{"truncated body", with(good, 1, &flight.FlightData{DataHeader: batch.DataHeader, DataBody: batch.DataBody[:len(batch.DataBody)-8]}), "the metadata says"},
		{"truncated header", with(good, 1, header(batch, batch.DataHeader[:len(batch.DataHeader)/2])), "malformed IPC message header in message 2"},
		{"dictionary batch", append(good[:1:1], &flight.FlightData{DataHeader: dictMeta, DataBody: dictBody}, batch), "DictionaryBatch message"},
		{"compressed batch", with(good, 1, compressedBatch(t)), "compressed record batch"},
		{"batch before schema", []*flight.FlightData{{FlightDescriptor: schema.FlightDescriptor}, batch, schema}, "before the schema"},
		{"second schema", append(good[:2:2], schema), "second schema"},
		{"message without a header", append(good[:2:2], &flight.FlightData{AppMetadata: []byte("hi")}), "message 3 has no IPC header"},
	}
	s, u := newTestServer()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			aborted := len(u.aborted)
			err := put(s, tt.msgs)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.want) {
				t.Fatalf("got %v, want InvalidArgument saying %q", err, tt.want)
			}
			if len(u.aborted) != aborted+1 || len(u.committed) != 0 {
				t.Errorf("the upload was not aborted (%d aborted, %d committed)", len(u.aborted)-aborted, len(u.committed))
			}
		})
	}
	if err := put(s, good); err != nil {
		t.Fatalf("a good upload after the crafted ones: %v", err)
	}
	if len(u.committed) != 1 || u.committed[0] != 20 {
		t.Errorf("committed %v, want one upload of 20 rows", u.committed)
	}
}

func TestAllocBound(t *testing.T) {
	for _, tc := range []struct {
		limits *havenv1.UploadLimits
		want   int64
	}{
		{&havenv1.UploadLimits{MaxBytes: 1 << 30, MaxBatchBytes: 64 << 20}, 64 << 20},
		{&havenv1.UploadLimits{MaxBytes: 1 << 20, MaxBatchBytes: 64 << 20}, 1 << 20},
		{&havenv1.UploadLimits{MaxBytes: 1 << 20}, 1 << 20},
		{&havenv1.UploadLimits{}, maxAlloc},
		{nil, maxAlloc},
	} {
		if got := allocBound(tc.limits); got != tc.want {
			t.Errorf("allocBound(%v) = %d, want %d", tc.limits, got, tc.want)
		}
	}
}

// Each byte of the schema's and a batch's header flipped, and each cut of
// the batch's body: DoPut answers every one with a status, without a
// panic, and what it accepts is safe to read (Commit reads it).
func TestDoPutSurvivesCorruption(t *testing.T) {
	good := messages(t, planSchema(), 10)
	s, _ := newTestServer()
	for i := range 2 {
		for j := range good[i].DataHeader {
			h := bytes.Clone(good[i].DataHeader)
			h[j] ^= 0xA5
			checkAnswer(t, put(s, with(good, i, header(good[i], h))))
		}
	}
	for n := range len(good[1].DataBody) {
		err := put(s, with(good, 1, &flight.FlightData{DataHeader: good[1].DataHeader, DataBody: good[1].DataBody[:n]}))
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("body cut to %d bytes: %v, want InvalidArgument", n, err)
		}
	}
}

// checkAnswer fails t unless err is nil or a refusal of bad input.
func checkAnswer(t testing.TB, err error) {
	t.Helper()
	switch status.Code(err) {
	case codes.OK, codes.InvalidArgument, codes.ResourceExhausted:
	default:
		t.Fatalf("DoPut answered %v", err)
	}
}

func FuzzDoPut(f *testing.F) {
	good := messages(f, planSchema(), 10)
	f.Add(good[0].DataHeader, good[1].DataHeader, good[1].DataBody)
	f.Add(good[0].DataHeader, arrowsafetest.SetNode(f, good[1].DataHeader, 2, 10, 3), good[1].DataBody)
	f.Fuzz(func(t *testing.T, schemaHeader, batchHeader, body []byte) {
		s, _ := newTestServer()
		checkAnswer(t, put(s, []*flight.FlightData{
			{FlightDescriptor: havenv1.TaskDescriptor("task-1"), DataHeader: schemaHeader},
			{DataHeader: batchHeader, DataBody: body},
		}))
	})
}
