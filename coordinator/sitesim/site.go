// Package sitesim simulates sites for measuring and testing a
// coordinator: each Site links to it over NodeLink with its own node
// certificate, as a node does, and answers the tasks it is sent with
// real Arrow Flight uploads of whatever records it is given, without a
// node's data, connector or policy. Integration tests use Sites as node
// sites (coordinatortest.Site); the national bench runs thousands
// of them in one process.
package sitesim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// Site is a simulated site, not a node: it registers over NodeLink with
// its own certificate, heartbeats, and answers each Task it is sent by accepting it, uploading what Answer returns with Flight DoPut
// and reporting TaskDone with the figures it sent. Fields change its
// behaviour; set them before Connect.
type Site struct {
	ODS        string
	Kind       cdm.SiteKind
	Population int64
	// Activity is a trust's hospital activity records, sent in Register.
	Activity int64
	// RegisterAs, if set, is the site it claims in Register,
	// instead of the one its certificate names.
	RegisterAs   string
	LinkageKeyID string
	Paused       bool
	// Answer returns the records to upload for a task, built to schema
	// (the plan's for the site's kind); none means an upload of no rows.
	Answer func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error)
	// Refuse makes the site refuse every task, with RefuseReasons if
	// set.
	Refuse        bool
	RefuseReasons []*havenv1.PolicyReason
	// Silent makes the site accept every task and then never finish it.
	Silent bool
	// BeforeUpload runs before the real upload; tests use it to send bad
	// uploads first.
	BeforeUpload func(ctx context.Context, conn *grpc.ClientConn, task *havenv1.Task, schema *arrow.Schema)
	// OptOutsExcluded is what the site reports in TaskDone as rows left
	// out because the patient opted out.
	OptOutsExcluded int64
	// WithholdDone makes the site upload but keep its TaskDone back, as
	// if the link dropped first; Withheld returns them.
	WithholdDone bool
	// Outcomes and Running go in Register, as after a dropped link.
	Outcomes []*havenv1.TaskOutcome
	Running  []string
	// NoHeartbeat stops the site sending Heartbeat.
	NoHeartbeat bool
	// Gate, if set, bounds how many sites build and upload an answer
	// at once: each holds a slot from building its records until its
	// upload ends, so that thousands of simulated sites do not hold
	// their answers in memory at the same time.
	Gate chan struct{}

	dial   func() (*grpc.ClientConn, error) // nil when conn was given
	owned  bool                             // conn was dialled by Connect, and Close closes it
	cat    *catalog.Catalog                 // plans the site's answers
	conn   *grpc.ClientConn
	stream havenv1.NodeLink_ConnectClient
	sendMu sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	registered *havenv1.Registered
	tasks      []*havenv1.Task
	cancels    []*havenv1.CancelTask
	sequence   []*havenv1.CoordinatorMessage // tasks and opt-out lists, in order
	goodbye    *havenv1.Goodbye
	receipts   []*havenv1.UploadReceipt
	withheld   []*havenv1.TaskDone
	linkDown   bool
	errs       []error
	changed    chan struct{}
}

// New returns a simulated site ods of kind with a registered population;
// it links when Connect is called, over the connection dial returns
// (which must present the site's node certificate). cat is the catalogue
// of the bundle the coordinator loaded, which the site plans its answers
// from.
func New(ods string, kind cdm.SiteKind, population int64, cat *catalog.Catalog, dial func() (*grpc.ClientConn, error)) *Site {
	return &Site{ODS: ods, Kind: kind, Population: population, cat: cat, dial: dial, changed: make(chan struct{})}
}

// Remote returns a simulated site ods that links over conn, which must
// present the site's node certificate.
func Remote(conn *grpc.ClientConn, cat *catalog.Catalog, ods string, kind cdm.SiteKind, population int64) *Site {
	return &Site{ODS: ods, Kind: kind, Population: population, cat: cat, conn: conn, changed: make(chan struct{})}
}

// RejectedError is returned by Connect when the coordinator refuses the
// Register.
type RejectedError struct{ Rejected *havenv1.Rejected }

func (e *RejectedError) Error() string {
	return fmt.Sprintf("rejected: %s: %s", e.Rejected.GetCode(), e.Rejected.GetMessage())
}

// Connect dials the coordinator with the site's certificate, registers,
// and serves the link in the background until Close. It returns after
// Registered, or with a *RejectedError.
func (st *Site) Connect(ctx context.Context) (err error) {
	if st.dial != nil {
		conn, err := st.dial()
		if err != nil {
			return fmt.Errorf("site %s: dial: %w", st.ODS, err)
		}
		st.conn, st.owned = conn, true
		defer func() {
			if err != nil {
				_ = conn.Close()
				st.owned = false
			}
		}()
	}
	lctx, cancel := context.WithCancel(context.Background())
	st.cancel = cancel
	stream, err := havenv1.NewNodeLinkClient(st.conn).Connect(lctx)
	if err != nil {
		cancel()
		return err
	}
	st.stream = stream
	site := st.ODS
	if st.RegisterAs != "" {
		site = st.RegisterAs
	}
	reg := &havenv1.Register{SiteOds: site, SiteKind: wire.SiteKind(st.Kind), NodeVersion: "sitesim",
		CdmVersion: cdm.Version, BundleRevision: "test", RegisteredPopulation: st.Population,
		ActivityRecords: st.Activity,
		LinkageKeyId:    st.LinkageKeyID, Pause: &havenv1.PauseState{Paused: st.Paused},
		UnreportedOutcomes: st.Outcomes, RunningTaskIds: st.Running}
	if err := st.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_Register{Register: reg}}); err != nil {
		cancel()
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		cancel()
		return err
	}
	if rej := first.GetRejected(); rej != nil {
		cancel()
		return &RejectedError{Rejected: rej}
	}
	reg2 := first.GetRegistered()
	if reg2 == nil {
		cancel()
		return fmt.Errorf("first message was %T, want Registered", first.GetBody())
	}
	st.mu.Lock()
	st.registered = reg2
	st.mu.Unlock()
	st.wg.Add(2)
	go st.heartbeat(lctx, reg2.GetHeartbeatInterval().AsDuration())
	go st.serve(lctx)
	return nil
}

// Close ends the site's link, waits for its goroutines and closes the
// connection Connect dialled.
func (st *Site) Close() {
	if st.cancel != nil {
		st.cancel()
	}
	st.wg.Wait()
	if st.owned {
		_ = st.conn.Close()
		st.owned = false
	}
}

func (st *Site) send(m *havenv1.NodeMessage) error {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	return st.stream.Send(m)
}

func (st *Site) heartbeat(ctx context.Context, every time.Duration) {
	defer st.wg.Done()
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if st.NoHeartbeat {
				continue
			}
			if err := st.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_Heartbeat{Heartbeat: &havenv1.Heartbeat{
				SentAt: timestamppb.Now(), Paused: st.Paused}}}); err != nil {
				return
			}
		}
	}
}

func (st *Site) serve(ctx context.Context) {
	defer st.wg.Done()
	for {
		m, err := st.stream.Recv()
		if err != nil {
			st.record(func() { st.linkDown = true })
			return
		}
		switch b := m.GetBody().(type) {
		case *havenv1.CoordinatorMessage_Task:
			st.record(func() { st.tasks, st.sequence = append(st.tasks, b.Task), append(st.sequence, m) })
			st.wg.Add(1)
			go func() {
				defer st.wg.Done()
				st.run(ctx, b.Task)
			}()
		case *havenv1.CoordinatorMessage_CancelTask:
			st.record(func() { st.cancels = append(st.cancels, b.CancelTask) })
		case *havenv1.CoordinatorMessage_Goodbye:
			st.record(func() { st.goodbye = b.Goodbye })
		case *havenv1.CoordinatorMessage_NetworkOptOuts:
			st.record(func() { st.sequence = append(st.sequence, m) })
		}
	}
}

// record changes the site's observations and wakes anyone waiting.
func (st *Site) record(change func()) {
	st.mu.Lock()
	defer st.mu.Unlock()
	change()
	close(st.changed)
	st.changed = make(chan struct{})
}

func (st *Site) fail(task *havenv1.Task, code havenv1.TaskErrorCode, err error) {
	st.record(func() { st.errs = append(st.errs, err) })
	_ = st.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskFailed{TaskFailed: &havenv1.TaskFailed{
		TaskId: task.GetTaskId(), Code: code, Message: err.Error()}}})
}

// run answers one task.
func (st *Site) run(ctx context.Context, task *havenv1.Task) {
	if st.Refuse {
		reasons := st.RefuseReasons
		if reasons == nil {
			reasons = []*havenv1.PolicyReason{{Code: "purpose_not_accepted", Message: "this site does not take part in runs for this purpose"}}
		}
		_ = st.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskRefused{TaskRefused: &havenv1.TaskRefused{
			TaskId: task.GetTaskId(), Reasons: reasons}}})
		return
	}
	if err := st.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskAccepted{TaskAccepted: &havenv1.TaskAccepted{
		TaskId: task.GetTaskId(), SqlHash: "0000000000000000000000000000000000000000000000000000000000000000"}}}); err != nil {
		return
	}
	if st.Silent {
		return
	}
	def, ok := st.cat.Get(task.GetDefinitionId())
	if !ok {
		st.fail(task, havenv1.TaskErrorCode_TASK_ERROR_CODE_INVALID_TASK, fmt.Errorf("no definition %s", task.GetDefinitionId()))
		return
	}
	// A node plans with record keys when the task asks for them.
	schema, ok := def.PlanWith(catalog.PlanOptions{RecordKeys: task.GetRecordKeyRange() > 0}).Schema(st.Kind)
	if !ok {
		st.fail(task, havenv1.TaskErrorCode_TASK_ERROR_CODE_INVALID_TASK, fmt.Errorf("no %s task in the plan", st.Kind))
		return
	}
	if st.Gate != nil {
		select {
		case st.Gate <- struct{}{}:
			defer func() { <-st.Gate }()
		case <-ctx.Done():
			return
		}
	}
	if st.BeforeUpload != nil {
		st.BeforeUpload(ctx, st.conn, task, schema)
	}
	var recs []arrow.Record
	if st.Answer != nil {
		var err error
		if recs, err = st.Answer(task, schema); err != nil {
			st.fail(task, havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, err)
			return
		}
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	rc, sent, err := uploadRetrying(ctx, st.conn, task.GetTaskId(), schema, recs)
	if err != nil {
		st.fail(task, havenv1.TaskErrorCode_TASK_ERROR_CODE_UPLOAD, err)
		return
	}
	done := &havenv1.TaskDone{TaskId: task.GetTaskId(), Rows: sent.Rows, Bytes: sent.Bytes, Batches: sent.Batches,
		Fields: task.GetOutputFields(), RowsExcludedOptOut: st.OptOutsExcluded}
	st.record(func() {
		st.receipts = append(st.receipts, rc)
		if st.WithholdDone {
			st.withheld = append(st.withheld, done)
		}
	})
	if !st.WithholdDone {
		_ = st.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskDone{TaskDone: done}})
	}
}

// Sequence returns the Task and NetworkOptOuts messages the site was
// sent, in the order they came, from the opt-out list sent at
// registration on.
func (st *Site) Sequence() []*havenv1.CoordinatorMessage {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]*havenv1.CoordinatorMessage(nil), st.sequence...)
}

// Publish sends a type 1 opt-out list, as a practice's node does: hashes
// are sorted, distinct 16-byte values.
func (st *Site) Publish(hashes []byte) error {
	d := sha256.Sum256(hashes)
	return st.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_OptOutPublish{OptOutPublish: &havenv1.OptOutPublish{
		Hashes: hashes, Digest: hex.EncodeToString(d[:])}}})
}

// Withheld returns the TaskDone messages the site kept back.
func (st *Site) Withheld() []*havenv1.TaskDone {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]*havenv1.TaskDone(nil), st.withheld...)
}

// LinkDown reports whether the site's link has ended.
func (st *Site) LinkDown() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.linkDown
}

// Registered is the coordinator's answer to the site's Register.
func (st *Site) Registered() *havenv1.Registered {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.registered
}

// Tasks returns the tasks the site was sent.
func (st *Site) Tasks() []*havenv1.Task {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]*havenv1.Task(nil), st.tasks...)
}

// Cancels returns the CancelTask messages the site was sent.
func (st *Site) Cancels() []*havenv1.CancelTask {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]*havenv1.CancelTask(nil), st.cancels...)
}

// Goodbye returns the Goodbye the site was sent, if any.
func (st *Site) Goodbye() *havenv1.Goodbye {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.goodbye
}

// Receipts returns the UploadReceipts of the site's uploads.
func (st *Site) Receipts() []*havenv1.UploadReceipt {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]*havenv1.UploadReceipt(nil), st.receipts...)
}

// Errors returns what went wrong in the site's tasks.
func (st *Site) Errors() []error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]error(nil), st.errs...)
}

// WaitFor waits until cond holds of the site or ctx ends.
func (st *Site) WaitFor(ctx context.Context, cond func(*Site) bool) error {
	for {
		st.mu.Lock()
		ch := st.changed
		st.mu.Unlock()
		if cond(st) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Sent is what an uploader sent: rows, and record-batch body bytes and
// messages, counted as havenv1.UploadLimits defines them.
type Sent struct {
	Rows, Bytes, Batches int64
}

// countingWriter counts the record-batch bodies a Flight writer sends.
type countingWriter struct {
	stream flight.FlightService_DoPutClient
	sent   *Sent
}

func (c *countingWriter) Send(fd *flight.FlightData) error {
	if len(fd.DataHeader) > 0 {
		msg := ipc.NewMessage(memory.NewBufferBytes(fd.DataHeader), memory.NewBufferBytes(nil))
		if msg.Type() == ipc.MessageRecordBatch {
			c.sent.Bytes += int64(len(fd.DataBody))
			c.sent.Batches++
		}
		msg.Release()
	}
	return c.stream.Send(fd)
}

// Upload sends recs, with schema, as the DoPut upload of task taskID and
// returns the coordinator's receipt and what was sent. A refused upload
// returns the coordinator's status error.
func Upload(ctx context.Context, conn grpc.ClientConnInterface, taskID string, schema *arrow.Schema, recs []arrow.Record) (*havenv1.UploadReceipt, Sent, error) {
	var sent Sent
	stream, err := flight.NewFlightServiceClient(conn).DoPut(ctx)
	if err != nil {
		return nil, sent, err
	}
	w := flight.NewRecordWriter(&countingWriter{stream: stream, sent: &sent}, ipc.WithSchema(schema))
	w.SetFlightDescriptor(havenv1.TaskDescriptor(taskID))
	var werr error
	for _, r := range recs {
		if werr = w.Write(r); werr != nil {
			break
		}
		sent.Rows += r.NumRows()
	}
	if werr == nil {
		werr = w.Close()
	}
	if werr != nil && !errors.Is(werr, io.EOF) {
		return nil, sent, werr
	}
	// A server that refuses the upload ends the stream; its reason comes
	// with Recv.
	_ = stream.CloseSend()
	res, err := stream.Recv()
	if err != nil {
		return nil, sent, err
	}
	rc := new(havenv1.UploadReceipt)
	if err := proto.Unmarshal(res.GetAppMetadata(), rc); err != nil {
		return nil, sent, fmt.Errorf("decode receipt: %w", err)
	}
	return rc, sent, nil
}

// uploadRetrying is Upload, tried again while the coordinator answers
// Unavailable or Aborted (it still holds an earlier attempt open), as a
// node's runner does, for up to ten attempts.
func uploadRetrying(ctx context.Context, conn grpc.ClientConnInterface, taskID string, schema *arrow.Schema, recs []arrow.Record) (*havenv1.UploadReceipt, Sent, error) {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		rc, sent, err := Upload(ctx, conn, taskID, schema, recs)
		if c := status.Code(err); err == nil || attempt == 10 || (c != codes.Unavailable && c != codes.Aborted) {
			return rc, sent, err
		}
		select {
		case <-ctx.Done():
			return nil, sent, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// SendRaw sends FlightData messages as they are as a DoPut upload and
// returns the coordinator's answer; tests use it for malformed streams.
func SendRaw(ctx context.Context, conn grpc.ClientConnInterface, msgs []*flight.FlightData) error {
	stream, err := flight.NewFlightServiceClient(conn).DoPut(ctx)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break
		}
	}
	_ = stream.CloseSend()
	_, err = stream.Recv()
	return err
}
