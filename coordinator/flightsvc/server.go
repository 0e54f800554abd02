// Package flightsvc is the coordinator's Arrow Flight service: DoPut, by
// which a node uploads a task's partial result, and DoGet, by which a
// commissioner fetches a released table. Every other Flight method answers
// Unimplemented.
//
// DoPut is decoded and checked here, before anything reaches the run: the
// descriptor must name a task (havenv1.ParseTaskDescriptor) of the calling
// node's own site, the schema must be the plan's, and the task's row and
// byte limits are enforced message by message while the stream is read, so
// an oversized upload is stopped at the limit rather than read whole. The
// batches are then handed to the run, which checks every row and stages
// them; the reply's app_metadata is a havenv1.UploadReceipt.
package flightsvc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/havenhealth/haven/coordinator/authn"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// Upload is one reserved upload (dispatch.Upload).
type Upload interface {
	Schema() *arrow.Schema
	Limits() *havenv1.UploadLimits
	Commit(ctx context.Context, recs []arrow.Record, rc *havenv1.UploadReceipt) error
	Abort(ctx context.Context, rc *havenv1.UploadReceipt, cause error)
}

// Uploads opens uploads for tasks.
type Uploads interface {
	// OpenUpload reserves task taskID for an upload by site; its errors
	// are gRPC statuses.
	OpenUpload(ctx context.Context, site, taskID string) (Upload, error)
}

// Releases serves released tables.
type Releases interface {
	// Release returns the released table of a run as Arrow IPC, if p may
	// have it; its errors are gRPC statuses.
	Release(ctx context.Context, p authn.Principal, runID string) ([]byte, error)
}

// maxHeaderBytes bounds one message's IPC metadata. Haven's schemas have
// tens of fields; the bound stops hostile metadata costing memory.
const maxHeaderBytes = 1 << 20

// getChunkRows is how many rows of a released table go in one DoGet
// message, keeping each well under gRPC's default message size.
const getChunkRows = 8192

// Server serves DoPut and DoGet.
type Server struct {
	flight.BaseFlightServer
	uploads  Uploads
	releases Releases
	log      *slog.Logger
}

// New returns a Flight server.
func New(uploads Uploads, releases Releases, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{uploads: uploads, releases: releases, log: log}
}

// Handshake is not used: callers authenticate with their network
// certificate or a bearer token on every call.
func (s *Server) Handshake(flight.FlightService_HandshakeServer) error {
	return status.Error(codes.Unimplemented, "Haven authenticates every call by certificate or bearer token; there is no Flight handshake")
}

// DoPut receives a task's partial result.
func (s *Server) DoPut(stream flight.FlightService_DoPutServer) error {
	ctx := stream.Context()
	p, ok := authn.FromContext(ctx)
	if !ok || p.Kind != authn.KindNode {
		return status.Error(codes.PermissionDenied, "uploads come from nodes with a network node certificate")
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return status.Error(codes.InvalidArgument, "empty upload: no descriptor and no schema")
	}
	if err != nil {
		return err
	}
	taskID, err := havenv1.ParseTaskDescriptor(first.GetFlightDescriptor())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	up, err := s.uploads.OpenUpload(ctx, p.ODS, taskID)
	if err != nil {
		return err
	}
	rc := &havenv1.UploadReceipt{TaskId: taskID}
	recs, err := s.read(first, stream, up, rc)
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	if err != nil {
		s.logRejected(ctx, p.ODS, taskID, err)
		up.Abort(ctx, rc, err)
		return err
	}
	if err := up.Commit(ctx, recs, rc); err != nil {
		s.logRejected(ctx, p.ODS, taskID, err)
		return err
	}
	meta, err := proto.Marshal(rc)
	if err != nil {
		return status.Errorf(codes.Internal, "encode receipt: %v", err)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "upload received", slog.String("site", p.ODS), slog.String("task", taskID),
		slog.Int64("rows", rc.Rows), slog.Int64("bytes", rc.Bytes), slog.Int64("batches", rc.Batches))
	return stream.Send(&flight.PutResult{AppMetadata: meta})
}

// quoted matches a double-quoted string in an error message.
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// logRejected logs a refused upload. The node is told the whole error, but
// the log leaves out the values it quotes: they are what the site sent.
func (s *Server) logRejected(ctx context.Context, site, taskID string, err error) {
	st := status.Convert(err)
	s.log.LogAttrs(ctx, slog.LevelWarn, "upload rejected", slog.String("site", site), slog.String("task", taskID),
		slog.String("code", st.Code().String()), slog.String("error", quoted.ReplaceAllString(st.Message(), `"…"`)))
}

// read reads the whole upload within the task's limits and returns its
// records, retained. On error it still returns what it retained, for the
// caller to release.
func (s *Server) read(first *flight.FlightData, stream flight.FlightService_DoPutServer, up Upload, rc *havenv1.UploadReceipt) (recs []arrow.Record, err error) {
	defer func() {
		// Arrow's readers can panic on a malformed message; nothing has
		// reached the run, so report it as bad input.
		if p := recover(); p != nil {
			err = status.Errorf(codes.InvalidArgument, "malformed Arrow stream: %v", p)
		}
	}()
	m := &meter{src: stream, first: first, limits: up.Limits(), rc: rc}
	rdr, err := flight.NewRecordReader(m, ipc.WithAllocator(memory.DefaultAllocator))
	if err != nil {
		return nil, m.errOr(codes.InvalidArgument, "malformed Arrow stream: %v", err)
	}
	defer rdr.Release()
	if err := CheckSchema(rdr.Schema(), up.Schema()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "upload for task %s: %v", rc.TaskId, err)
	}
	maxRows := up.Limits().GetMaxRows()
	for rdr.Next() {
		rec := rdr.Record()
		rc.Rows += rec.NumRows()
		if maxRows > 0 && rc.Rows > maxRows {
			return recs, status.Errorf(codes.ResourceExhausted, "upload for task %s has more than the task's limit of %d rows", rc.TaskId, maxRows)
		}
		rec.Retain()
		recs = append(recs, rec)
	}
	if err := rdr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return recs, m.errOr(codes.InvalidArgument, "malformed Arrow stream: %v", err)
	}
	if m.err != nil {
		return recs, m.err
	}
	return recs, nil
}

// meter feeds FlightData to the IPC reader, replaying the first message,
// and counts and limits record-batch body bytes as they arrive.
type meter struct {
	src    flight.DataStreamReader
	first  *flight.FlightData
	limits *havenv1.UploadLimits
	rc     *havenv1.UploadReceipt
	err    error // why the meter stopped the stream
}

func (m *meter) errOr(c codes.Code, format string, args ...any) error {
	if m.err != nil {
		return m.err
	}
	return status.Errorf(c, format, args...)
}

func (m *meter) Recv() (*flight.FlightData, error) {
	if m.err != nil {
		return nil, m.err
	}
	fd := m.first
	m.first = nil
	if fd == nil {
		var err error
		if fd, err = m.src.Recv(); err != nil {
			return nil, err
		}
	}
	if len(fd.DataHeader) > maxHeaderBytes {
		m.err = status.Errorf(codes.InvalidArgument, "an IPC message header of %d bytes is over the limit of %d", len(fd.DataHeader), maxHeaderBytes)
		return nil, m.err
	}
	if len(fd.DataHeader) == 0 {
		if len(fd.DataBody) > 0 {
			m.err = status.Error(codes.InvalidArgument, "a message has a body but no IPC header")
			return nil, m.err
		}
		return fd, nil
	}
	typ, err := messageType(fd.DataHeader)
	if err != nil {
		m.err = status.Errorf(codes.InvalidArgument, "malformed IPC message header: %v", err)
		return nil, m.err
	}
	switch typ {
	case ipc.MessageSchema:
	case ipc.MessageRecordBatch:
		n := int64(len(fd.DataBody))
		if lim := m.limits.GetMaxBatchBytes(); lim > 0 && n > lim {
			m.err = status.Errorf(codes.ResourceExhausted, "a record batch of %d bytes is over the task's limit of %d bytes per batch", n, lim)
			return nil, m.err
		}
		m.rc.Bytes += n
		m.rc.Batches++
		if lim := m.limits.GetMaxBytes(); lim > 0 && m.rc.Bytes > lim {
			m.err = status.Errorf(codes.ResourceExhausted, "the upload is over the task's limit of %d bytes", lim)
			return nil, m.err
		}
	default:
		m.err = status.Errorf(codes.InvalidArgument, "unexpected IPC message %s: an upload carries a schema and record batches only", typ)
		return nil, m.err
	}
	return fd, nil
}

// messageType reads the type of an IPC message from its header.
func messageType(header []byte) (t ipc.MessageType, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	msg := ipc.NewMessage(memory.NewBufferBytes(header), memory.NewBufferBytes(nil))
	defer msg.Release()
	return msg.Type(), nil
}

// CheckSchema compares an upload's schema with the plan's: the same fields,
// in order, with the same types and nullability. Schema metadata is
// optional, but a haven.* key that is present must agree with the plan's.
func CheckSchema(got, want *arrow.Schema) error {
	for i, wf := range want.Fields() {
		if i >= got.NumFields() {
			return fmt.Errorf("schema has %d fields, the plan %d: %q is missing", got.NumFields(), want.NumFields(), wf.Name)
		}
		gf := got.Field(i)
		switch {
		case gf.Name != wf.Name:
			return fmt.Errorf("field %d is %q; the plan has %q", i, gf.Name, wf.Name)
		case !arrow.TypeEqual(gf.Type, wf.Type):
			return fmt.Errorf("field %q is %s; the plan has %s", wf.Name, gf.Type, wf.Type)
		case gf.Nullable != wf.Nullable:
			return fmt.Errorf("field %q has nullable=%v; the plan has %v", wf.Name, gf.Nullable, wf.Nullable)
		}
	}
	if got.NumFields() > want.NumFields() {
		return fmt.Errorf("field %q is not in the plan, which has %d fields", got.Field(want.NumFields()).Name, want.NumFields())
	}
	gm, wm := got.Metadata(), want.Metadata()
	for i, k := range gm.Keys() {
		j := wm.FindKey(k)
		if j < 0 {
			continue
		}
		if gm.Values()[i] != wm.Values()[j] {
			return fmt.Errorf("schema metadata %s is %q; this run's is %q", k, gm.Values()[i], wm.Values()[j])
		}
	}
	return nil
}

// DoGet sends a released table.
func (s *Server) DoGet(tkt *flight.Ticket, stream flight.FlightService_DoGetServer) error {
	ctx := stream.Context()
	p, ok := authn.FromContext(ctx)
	if !ok || p.Kind != authn.KindUser {
		return status.Error(codes.PermissionDenied, "released tables are for users")
	}
	runID, err := havenv1.ParseTableTicket(tkt)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	b, err := s.releases.Release(ctx, p, runID)
	if err != nil {
		return err
	}
	rdr, err := ipc.NewReader(bytes.NewReader(b))
	if err != nil {
		return status.Errorf(codes.Internal, "read stored table of run %s: %v", runID, err)
	}
	defer rdr.Release()
	w := flight.NewRecordWriter(stream, ipc.WithSchema(rdr.Schema()))
	for rdr.Next() {
		rec := rdr.Record()
		for off := int64(0); off < rec.NumRows() || off == 0; off += getChunkRows {
			part := rec.NewSlice(off, min(off+getChunkRows, rec.NumRows()))
			err := w.Write(part)
			part.Release()
			if err != nil {
				return err
			}
			if rec.NumRows() == 0 {
				break
			}
		}
	}
	if err := rdr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return status.Errorf(codes.Internal, "read stored table of run %s: %v", runID, err)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "released table fetched", slog.String("run", runID), slog.String("by", p.Actor()))
	return w.Close()
}
