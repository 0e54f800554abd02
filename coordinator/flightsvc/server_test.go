package flightsvc

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

func planSchema() *arrow.Schema {
	md := arrow.NewMetadata([]string{"haven.definition.id"}, []string{"statins-chd"})
	return arrow.NewSchema([]arrow.Field{
		{Name: "sex", Type: arrow.BinaryTypes.String},
		{Name: "patients", Type: arrow.PrimitiveTypes.Int64},
		{Name: "top", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	}, &md)
}

// messages encodes records as the FlightData of an upload.
func messages(t testing.TB, schema *arrow.Schema, rows ...int) []*flight.FlightData {
	t.Helper()
	var out []*flight.FlightData
	w := flight.NewRecordWriter(sink{&out}, ipc.WithSchema(schema))
	w.SetFlightDescriptor(havenv1.TaskDescriptor("task-1"))
	for _, n := range rows {
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		for range n {
			b.Field(0).(*array.StringBuilder).Append("F")
			b.Field(1).(*array.Int64Builder).Append(1)
			b.Field(2).(*array.Int64Builder).AppendNull()
		}
		rec := b.NewRecord()
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
		b.Release()
	}
	w.Close()
	return out
}

type sink struct{ out *[]*flight.FlightData }

func (s sink) Send(fd *flight.FlightData) error {
	*s.out = append(*s.out, &flight.FlightData{FlightDescriptor: fd.FlightDescriptor,
		DataHeader: bytes.Clone(fd.DataHeader), DataBody: bytes.Clone(fd.DataBody)})
	return nil
}

type replay struct{ msgs []*flight.FlightData }

func (r *replay) Recv() (*flight.FlightData, error) {
	if len(r.msgs) == 0 {
		return nil, io.EOF
	}
	m := r.msgs[0]
	r.msgs = r.msgs[1:]
	return m, nil
}

// The meter counts record-batch bodies and stops the stream at a limit.
func TestMeter(t *testing.T) {
	schema := planSchema()
	msgs := messages(t, schema, 10, 10, 10)
	var bodies int64
	for _, m := range msgs[1:] {
		bodies += int64(len(m.DataBody))
	}
	read := func(limits *havenv1.UploadLimits) (*havenv1.UploadReceipt, error) {
		rc := &havenv1.UploadReceipt{}
		m := &meter{src: &replay{msgs: msgs[1:]}, first: msgs[0], limits: limits, rc: rc}
		rdr, err := flight.NewRecordReader(m)
		if err != nil {
			return rc, err
		}
		defer rdr.Release()
		for rdr.Next() {
		}
		if m.err != nil {
			return rc, m.err
		}
		return rc, rdr.Err()
	}
	rc, err := read(&havenv1.UploadLimits{})
	if err != nil || rc.Batches != 3 || rc.Bytes != bodies {
		t.Fatalf("unlimited: %v %v, want 3 batches of %d bytes", rc, err, bodies)
	}
	perBatch := int64(len(msgs[1].DataBody))
	for _, tc := range []struct {
		limits *havenv1.UploadLimits
		want   string
	}{
		{&havenv1.UploadLimits{MaxBytes: bodies - 1}, "limit of"},
		{&havenv1.UploadLimits{MaxBatchBytes: perBatch - 1}, "per batch"},
	} {
		_, err := read(tc.limits)
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want ResourceExhausted mentioning %q", tc.limits, err, tc.want)
		}
	}
	// A dictionary batch, or a body without a header, is refused.
	bad := &meter{src: &replay{}, first: &flight.FlightData{DataBody: []byte{1}}, limits: &havenv1.UploadLimits{}, rc: &havenv1.UploadReceipt{}}
	if _, err := bad.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("body without header: %v", err)
	}
	garbage := &meter{src: &replay{}, first: &flight.FlightData{DataHeader: []byte{0xff, 0xff, 0xff, 0x7f, 1, 2}}, limits: &havenv1.UploadLimits{}, rc: &havenv1.UploadReceipt{}}
	if _, err := garbage.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("garbage header: %v", err)
	}
}
