// Package flightsvc is the coordinator's Arrow Flight service: DoPut, by
// which a node uploads a task's partial result, DoGet, by which a
// commissioner fetches a released table, and ListFlights, GetFlightInfo
// and GetSchema, which describe the released tables a commissioner may
// fetch, so that a stock Flight client (pyarrow's list_flights and
// get_flight_info) needs no hand-built ticket. Every other Flight method
// answers Unimplemented.
//
// A released table's descriptor is the path ["runs", <run id>]
// (havenv1.RunDescriptor); its FlightInfo carries the table's schema, with
// its provenance and signature in the metadata, its row count and size,
// and one endpoint whose ticket DoGet accepts, at no location (this same
// service). The tables described are exactly those DoGet would send the
// caller: each is looked up through the same Release rule (its requester,
// or an operator); another organisation's run is NotFound and a
// colleague's PermissionDenied, as DoGet answers.
//
// DoPut is decoded and checked here, before anything reaches the run: the
// descriptor must name a task (havenv1.ParseTaskDescriptor) of the calling
// node's own site, the schema must be the plan's (catalog.CheckSchema, the
// checker the run applies too), and the task's row and byte limits are
// enforced message by message while the stream is read, so an oversized
// upload is stopped at the limit rather than read whole. A node is not
// trusted with the coordinator's memory either: each message's Arrow
// metadata and body are verified before the Arrow reader sees them, the
// reader's allocations are capped and its panics recovered, and each record
// is validated (internal/arrowsafe), so a crafted upload is refused with
// InvalidArgument instead of crashing the process. The batches are then
// handed to the run, which decodes and checks every row once and stages the
// result; the reply's app_metadata is a havenv1.UploadReceipt.
package flightsvc

import (
	"bytes"
	"context"
	"errors"
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
	"github.com/havenhealth/haven/coordinator/store"
	"github.com/havenhealth/haven/internal/arrowsafe"
	"github.com/havenhealth/haven/policy/catalog"
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

// Releases serves released tables (dispatch.Dispatcher).
type Releases interface {
	// Release returns the released table of a run as Arrow IPC, if p may
	// have it; its errors are gRPC statuses.
	Release(ctx context.Context, p authn.Principal, runID string) ([]byte, error)
	// ListRuns lists the runs p may see, a page at a time.
	ListRuns(ctx context.Context, p authn.Principal, q store.ListQuery) ([]*havenv1.Run, string, error)
}

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
//
// The upload comes from a node, which the coordinator does not trust with
// its memory: the meter verifies each message before the Arrow reader
// sees it, the reader allocates through a capped allocator, a panic is
// recovered, and each record is validated before it is kept.
func (s *Server) read(first *flight.FlightData, stream flight.FlightService_DoPutServer, up Upload, rc *havenv1.UploadReceipt) (recs []arrow.Record, err error) {
	m := &meter{src: stream, first: first, limits: up.Limits(), rc: rc}
	err = arrowsafe.Guard(func() error { return m.readAll(up.Schema(), &recs) })
	switch _, isStatus := status.FromError(err); {
	case m.err != nil:
		// The meter stopped the stream; what the reader made of that is
		// beside the point.
		return recs, m.err
	case err == nil || isStatus:
		return recs, err
	}
	if ae, ok := errors.AsType[*arrowsafe.AllocError](err); ok {
		return recs, status.Errorf(codes.InvalidArgument, "malformed Arrow stream: record batch %d: %v, which no batch within the task's limits needs", rc.Batches, ae)
	}
	return recs, status.Errorf(codes.InvalidArgument, "malformed Arrow stream: %v", err)
}

// readAll reads the upload's records into recs.
func (m *meter) readAll(schema *arrow.Schema, recs *[]arrow.Record) error {
	rdr, err := flight.NewRecordReader(m, ipc.WithAllocator(arrowsafe.NewCappedAllocator(allocBound(m.limits))))
	if err != nil {
		return err
	}
	defer rdr.Release()
	if err := catalog.CheckSchema(rdr.Schema(), schema); err != nil {
		return status.Errorf(codes.InvalidArgument, "upload for task %s: %v", m.rc.TaskId, err)
	}
	maxRows := m.limits.GetMaxRows()
	for rdr.Next() {
		rec := rdr.Record()
		if err := arrowsafe.ValidateRecord(rec); err != nil {
			return status.Errorf(codes.InvalidArgument, "upload for task %s: malformed record batch %d: %v", m.rc.TaskId, m.rc.Batches, err)
		}
		m.rc.Rows += rec.NumRows()
		if maxRows > 0 && m.rc.Rows > maxRows {
			return status.Errorf(codes.ResourceExhausted, "upload for task %s has more than the task's limit of %d rows", m.rc.TaskId, maxRows)
		}
		rec.Retain()
		*recs = append(*recs, rec)
	}
	// The reader reports the stream's clean end as no error; an io.EOF
	// here is a buffer read past its body, and a batch lost.
	return rdr.Err()
}

// maxAlloc bounds one allocation of the Arrow reader when the task sets
// no byte limits: it is the most the configuration lets a batch be, as
// one gRPC message carries one batch.
const maxAlloc = 1 << 30

// allocBound is the most the Arrow reader may allocate at once for an
// upload under limits. The reader copies each buffer of a batch out of
// the batch's body, and a buffer lies inside its body (the meter checks),
// so no honest allocation is more than a batch.
func allocBound(limits *havenv1.UploadLimits) int64 {
	bound := int64(maxAlloc)
	for _, lim := range []int64{limits.GetMaxBatchBytes(), limits.GetMaxBytes()} {
		if lim > 0 && lim < bound {
			bound = lim
		}
	}
	return bound
}

// meter feeds FlightData to the IPC reader, replaying the first message.
// It verifies each message before the reader sees it (arrowsafe), and
// counts and limits record-batch body bytes as they arrive.
type meter struct {
	src    flight.DataStreamReader
	first  *flight.FlightData
	limits *havenv1.UploadLimits
	rc     *havenv1.UploadReceipt
	n      int   // messages received
	schema bool  // whether the schema has come
	err    error // why the meter stopped the stream
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
	m.n++
	if err := m.check(fd); err != nil {
		m.err = err
		return nil, err
	}
	return fd, nil
}

// check checks one message of the upload.
func (m *meter) check(fd *flight.FlightData) error {
	if len(fd.DataHeader) > arrowsafe.MaxMetadata {
		return status.Errorf(codes.InvalidArgument, "an IPC message header of %d bytes is over the limit of %d", len(fd.DataHeader), arrowsafe.MaxMetadata)
	}
	if len(fd.DataHeader) == 0 {
		switch {
		case len(fd.DataBody) > 0:
			return status.Error(codes.InvalidArgument, "a message has a body but no IPC header")
		case m.n > 1:
			// Only the first may carry the descriptor alone.
			return status.Errorf(codes.InvalidArgument, "message %d has no IPC header: an upload carries a schema and record batches only", m.n)
		}
		return nil
	}
	h, err := arrowsafe.VerifyMessage(fd.DataHeader)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "malformed IPC message header in message %d: %v", m.n, err)
	}
	switch h.Type {
	case ipc.MessageSchema:
		if m.schema {
			return status.Errorf(codes.InvalidArgument, "message %d is a second schema: an upload has one", m.n)
		}
		m.schema = true
	case ipc.MessageRecordBatch:
		if !m.schema {
			return status.Errorf(codes.InvalidArgument, "message %d is a record batch before the schema", m.n)
		}
		n := int64(len(fd.DataBody))
		if lim := m.limits.GetMaxBatchBytes(); lim > 0 && n > lim {
			return status.Errorf(codes.ResourceExhausted, "a record batch of %d bytes is over the task's limit of %d bytes per batch", n, lim)
		}
		m.rc.Bytes += n
		m.rc.Batches++
		if lim := m.limits.GetMaxBytes(); lim > 0 && m.rc.Bytes > lim {
			return status.Errorf(codes.ResourceExhausted, "the upload is over the task's limit of %d bytes", lim)
		}
	}
	if err := h.CheckBody(int64(len(fd.DataBody))); err != nil {
		return status.Errorf(codes.InvalidArgument, "malformed IPC message %d (%s): %v", m.n, h.Type, err)
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

// user is the caller of a method for users.
func user(ctx context.Context) (authn.Principal, error) {
	p, ok := authn.FromContext(ctx)
	if !ok || p.Kind != authn.KindUser {
		return authn.Principal{}, status.Error(codes.PermissionDenied, "released tables are for users")
	}
	return p, nil
}

// listPage is how many runs ListFlights reads from the store at once.
const listPage = 200

// ListFlights lists the released tables the caller may fetch, newest
// first. Criteria are not supported: every such table is listed.
func (s *Server) ListFlights(c *flight.Criteria, stream flight.FlightService_ListFlightsServer) error {
	ctx := stream.Context()
	p, err := user(ctx)
	if err != nil {
		return err
	}
	if len(c.GetExpression()) > 0 {
		return status.Error(codes.InvalidArgument, "ListFlights takes no criteria: it lists every released table the caller may fetch")
	}
	q := store.ListQuery{States: []havenv1.RunState{havenv1.RunState_RUN_STATE_RELEASED}, PageSize: listPage}
	n := 0
	for {
		runs, next, err := s.releases.ListRuns(ctx, p, q)
		if err != nil {
			return s.internal(ctx, "list released runs", err)
		}
		for _, run := range runs {
			info, err := s.info(ctx, p, run.GetId())
			switch status.Code(err) {
			case codes.OK:
			case codes.NotFound, codes.PermissionDenied, codes.FailedPrecondition:
				continue // a colleague's table, or one gone since the listing
			default:
				return err
			}
			if err := stream.Send(info); err != nil {
				return err
			}
			n++
		}
		if next == "" {
			break
		}
		q.PageToken = next
	}
	s.log.LogAttrs(ctx, slog.LevelDebug, "released tables listed", slog.String("by", p.Actor()), slog.Int("tables", n))
	return nil
}

// GetFlightInfo describes the released table of the run a descriptor
// names (["runs", <run id>]), if the caller may fetch it.
func (s *Server) GetFlightInfo(ctx context.Context, d *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	p, err := user(ctx)
	if err != nil {
		return nil, err
	}
	runID, err := havenv1.ParseRunDescriptor(d)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return s.info(ctx, p, runID)
}

// GetSchema gives the schema of the released table of the run a
// descriptor names, as GetFlightInfo does.
func (s *Server) GetSchema(ctx context.Context, d *flight.FlightDescriptor) (*flight.SchemaResult, error) {
	info, err := s.GetFlightInfo(ctx, d)
	if err != nil {
		return nil, err
	}
	return &flight.SchemaResult{Schema: info.GetSchema()}, nil
}

// info describes run runID's released table to p, by the rule DoGet
// applies (Release).
func (s *Server) info(ctx context.Context, p authn.Principal, runID string) (*flight.FlightInfo, error) {
	b, err := s.releases.Release(ctx, p, runID)
	if err != nil {
		return nil, s.internal(ctx, "fetch released table", err)
	}
	rdr, err := ipc.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read stored table of run %s: %v", runID, err)
	}
	defer rdr.Release()
	var rows int64
	for rdr.Next() {
		rows += rdr.Record().NumRows()
	}
	if err := rdr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return nil, status.Errorf(codes.Internal, "read stored table of run %s: %v", runID, err)
	}
	tkt, err := havenv1.NewTableTicket(runID)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &flight.FlightInfo{
		Schema:           flight.SerializeSchema(rdr.Schema(), memory.DefaultAllocator),
		FlightDescriptor: havenv1.RunDescriptor(runID),
		Endpoint:         []*flight.FlightEndpoint{{Ticket: tkt}},
		TotalRecords:     rows,
		TotalBytes:       int64(len(b)),
		Ordered:          true,
	}, nil
}

// internal passes a gRPC status on and hides any other error's detail
// from the caller, logging it.
func (s *Server) internal(ctx context.Context, what string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	s.log.LogAttrs(ctx, slog.LevelError, what, slog.String("error", err.Error()))
	return status.Errorf(codes.Internal, "%s failed; the coordinator's log has the detail", what)
}
