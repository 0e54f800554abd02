package coordinatortest

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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// NodeDouble is a test double of a node, not a node: it registers over
// NodeLink with its own certificate, heartbeats, and answers each Task it
// is sent by accepting it, uploading what Answer returns with Flight DoPut
// and reporting TaskDone with the figures it sent. Fields change its
// behaviour; set them before Connect.
type NodeDouble struct {
	ODS        string
	Kind       cdm.SiteKind
	Population int64
	// Activity is a trust's hospital activity records, sent in Register.
	Activity int64
	// RegisterAs, if set, is the site the double claims in Register,
	// instead of the one its certificate names.
	RegisterAs   string
	LinkageKeyID string
	Paused       bool
	// Answer returns the records to upload for a task, built to schema
	// (the plan's for the double's kind); none means an upload of no rows.
	Answer func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error)
	// Refuse makes the double refuse every task, with RefuseReasons if
	// set.
	Refuse        bool
	RefuseReasons []*havenv1.PolicyReason
	// Silent makes the double accept every task and then never finish it.
	Silent bool
	// BeforeUpload runs before the real upload; tests use it to send bad
	// uploads first.
	BeforeUpload func(ctx context.Context, conn *grpc.ClientConn, task *havenv1.Task, schema *arrow.Schema)
	// OptOutsExcluded is what the double reports in TaskDone as rows left
	// out because the patient opted out.
	OptOutsExcluded int64
	// WithholdDone makes the double upload but keep its TaskDone back, as
	// if the link dropped first; Withheld returns them.
	WithholdDone bool
	// Outcomes and Running go in Register, as after a dropped link.
	Outcomes []*havenv1.TaskOutcome
	Running  []string
	// NoHeartbeat stops the double sending Heartbeat.
	NoHeartbeat bool
	// Gate, if set, bounds how many doubles build and upload an answer
	// at once: each holds a slot from building its records until its
	// upload ends, so that thousands of simulated sites do not hold
	// their answers in memory at the same time.
	Gate chan struct{}

	net    *Network         // nil for a double of a remote coordinator
	cat    *catalog.Catalog // plans the double's answers
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

// Node returns a node double for site ods; it connects when Connect is
// called.
func (n *Network) Node(ods string, kind cdm.SiteKind, population int64) *NodeDouble {
	return &NodeDouble{ODS: ods, Kind: kind, Population: population, net: n, cat: n.Catalog, changed: make(chan struct{})}
}

// RemoteNode returns a node double for site ods that links to a
// coordinator running elsewhere (another process) over conn, which must
// present the site's node certificate. cat is the catalogue of the bundle
// the coordinator loaded.
func RemoteNode(conn *grpc.ClientConn, cat *catalog.Catalog, ods string, kind cdm.SiteKind, population int64) *NodeDouble {
	return &NodeDouble{ODS: ods, Kind: kind, Population: population, cat: cat, conn: conn, changed: make(chan struct{})}
}

// RejectedError is returned by Connect when the coordinator refuses the
// Register.
type RejectedError struct{ Rejected *havenv1.Rejected }

func (e *RejectedError) Error() string {
	return fmt.Sprintf("rejected: %s: %s", e.Rejected.GetCode(), e.Rejected.GetMessage())
}

// Connect dials the coordinator with the double's certificate, registers,
// and serves the link in the background until Close. It returns after
// Registered, or with a *RejectedError.
func (nd *NodeDouble) Connect(ctx context.Context) error {
	if nd.net != nil {
		cert, key := nd.net.NodeCert(nd.ODS)
		nd.conn = nd.net.Dial(cert, key)
	}
	lctx, cancel := context.WithCancel(context.Background())
	nd.cancel = cancel
	stream, err := havenv1.NewNodeLinkClient(nd.conn).Connect(lctx)
	if err != nil {
		cancel()
		return err
	}
	nd.stream = stream
	site := nd.ODS
	if nd.RegisterAs != "" {
		site = nd.RegisterAs
	}
	reg := &havenv1.Register{SiteOds: site, SiteKind: wire.SiteKind(nd.Kind), NodeVersion: "test-double",
		CdmVersion: cdm.Version, BundleRevision: "test", RegisteredPopulation: nd.Population,
		ActivityRecords: nd.Activity,
		LinkageKeyId:    nd.LinkageKeyID, Pause: &havenv1.PauseState{Paused: nd.Paused},
		UnreportedOutcomes: nd.Outcomes, RunningTaskIds: nd.Running}
	if err := nd.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_Register{Register: reg}}); err != nil {
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
	nd.mu.Lock()
	nd.registered = reg2
	nd.mu.Unlock()
	nd.wg.Add(2)
	go nd.heartbeat(lctx, reg2.GetHeartbeatInterval().AsDuration())
	go nd.serve(lctx)
	return nil
}

// Close ends the double's link and waits for its goroutines.
func (nd *NodeDouble) Close() {
	if nd.cancel != nil {
		nd.cancel()
	}
	nd.wg.Wait()
}

func (nd *NodeDouble) send(m *havenv1.NodeMessage) error {
	nd.sendMu.Lock()
	defer nd.sendMu.Unlock()
	return nd.stream.Send(m)
}

func (nd *NodeDouble) heartbeat(ctx context.Context, every time.Duration) {
	defer nd.wg.Done()
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
			if nd.NoHeartbeat {
				continue
			}
			if err := nd.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_Heartbeat{Heartbeat: &havenv1.Heartbeat{
				SentAt: timestamppb.Now(), Paused: nd.Paused}}}); err != nil {
				return
			}
		}
	}
}

func (nd *NodeDouble) serve(ctx context.Context) {
	defer nd.wg.Done()
	for {
		m, err := nd.stream.Recv()
		if err != nil {
			nd.record(func() { nd.linkDown = true })
			return
		}
		switch b := m.GetBody().(type) {
		case *havenv1.CoordinatorMessage_Task:
			nd.record(func() { nd.tasks, nd.sequence = append(nd.tasks, b.Task), append(nd.sequence, m) })
			nd.wg.Add(1)
			go func() {
				defer nd.wg.Done()
				nd.run(ctx, b.Task)
			}()
		case *havenv1.CoordinatorMessage_CancelTask:
			nd.record(func() { nd.cancels = append(nd.cancels, b.CancelTask) })
		case *havenv1.CoordinatorMessage_Goodbye:
			nd.record(func() { nd.goodbye = b.Goodbye })
		case *havenv1.CoordinatorMessage_NetworkOptOuts:
			nd.record(func() { nd.sequence = append(nd.sequence, m) })
		}
	}
}

// record changes the double's observations and wakes anyone waiting.
func (nd *NodeDouble) record(change func()) {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	change()
	close(nd.changed)
	nd.changed = make(chan struct{})
}

func (nd *NodeDouble) fail(task *havenv1.Task, code havenv1.TaskErrorCode, err error) {
	nd.record(func() { nd.errs = append(nd.errs, err) })
	_ = nd.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskFailed{TaskFailed: &havenv1.TaskFailed{
		TaskId: task.GetTaskId(), Code: code, Message: err.Error()}}})
}

// run answers one task.
func (nd *NodeDouble) run(ctx context.Context, task *havenv1.Task) {
	if nd.Refuse {
		reasons := nd.RefuseReasons
		if reasons == nil {
			reasons = []*havenv1.PolicyReason{{Code: "purpose_not_accepted", Message: "this site does not take part in runs for this purpose"}}
		}
		_ = nd.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskRefused{TaskRefused: &havenv1.TaskRefused{
			TaskId: task.GetTaskId(), Reasons: reasons}}})
		return
	}
	if err := nd.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskAccepted{TaskAccepted: &havenv1.TaskAccepted{
		TaskId: task.GetTaskId(), SqlHash: "0000000000000000000000000000000000000000000000000000000000000000"}}}); err != nil {
		return
	}
	if nd.Silent {
		return
	}
	def, ok := nd.cat.Get(task.GetDefinitionId())
	if !ok {
		nd.fail(task, havenv1.TaskErrorCode_TASK_ERROR_CODE_INVALID_TASK, fmt.Errorf("no definition %s", task.GetDefinitionId()))
		return
	}
	// A node plans with record keys when the task asks for them.
	schema, ok := def.PlanWith(catalog.PlanOptions{RecordKeys: task.GetRecordKeyRange() > 0}).Schema(nd.Kind)
	if !ok {
		nd.fail(task, havenv1.TaskErrorCode_TASK_ERROR_CODE_INVALID_TASK, fmt.Errorf("no %s task in the plan", nd.Kind))
		return
	}
	if nd.Gate != nil {
		select {
		case nd.Gate <- struct{}{}:
			defer func() { <-nd.Gate }()
		case <-ctx.Done():
			return
		}
	}
	if nd.BeforeUpload != nil {
		nd.BeforeUpload(ctx, nd.conn, task, schema)
	}
	var recs []arrow.Record
	if nd.Answer != nil {
		var err error
		if recs, err = nd.Answer(task, schema); err != nil {
			nd.fail(task, havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, err)
			return
		}
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	rc, sent, err := Upload(ctx, nd.conn, task.GetTaskId(), schema, recs)
	if err != nil {
		nd.fail(task, havenv1.TaskErrorCode_TASK_ERROR_CODE_UPLOAD, err)
		return
	}
	done := &havenv1.TaskDone{TaskId: task.GetTaskId(), Rows: sent.Rows, Bytes: sent.Bytes, Batches: sent.Batches,
		Fields: task.GetOutputFields(), RowsExcludedOptOut: nd.OptOutsExcluded}
	nd.record(func() {
		nd.receipts = append(nd.receipts, rc)
		if nd.WithholdDone {
			nd.withheld = append(nd.withheld, done)
		}
	})
	if !nd.WithholdDone {
		_ = nd.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskDone{TaskDone: done}})
	}
}

// Sequence returns the Task and NetworkOptOuts messages the double was
// sent, in the order they came, from the opt-out list sent at
// registration on.
func (nd *NodeDouble) Sequence() []*havenv1.CoordinatorMessage {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return append([]*havenv1.CoordinatorMessage(nil), nd.sequence...)
}

// Publish sends a type 1 opt-out list, as a practice's node does: hashes
// are sorted, distinct 16-byte values.
func (nd *NodeDouble) Publish(hashes []byte) error {
	d := sha256.Sum256(hashes)
	return nd.send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_OptOutPublish{OptOutPublish: &havenv1.OptOutPublish{
		Hashes: hashes, Digest: hex.EncodeToString(d[:])}}})
}

// Withheld returns the TaskDone messages the double kept back.
func (nd *NodeDouble) Withheld() []*havenv1.TaskDone {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return append([]*havenv1.TaskDone(nil), nd.withheld...)
}

// LinkDown reports whether the double's link has ended.
func (nd *NodeDouble) LinkDown() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.linkDown
}

// Registered is the coordinator's answer to the double's Register.
func (nd *NodeDouble) Registered() *havenv1.Registered {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.registered
}

// Tasks returns the tasks the double was sent.
func (nd *NodeDouble) Tasks() []*havenv1.Task {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return append([]*havenv1.Task(nil), nd.tasks...)
}

// Cancels returns the CancelTask messages the double was sent.
func (nd *NodeDouble) Cancels() []*havenv1.CancelTask {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return append([]*havenv1.CancelTask(nil), nd.cancels...)
}

// Goodbye returns the Goodbye the double was sent, if any.
func (nd *NodeDouble) Goodbye() *havenv1.Goodbye {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.goodbye
}

// Receipts returns the UploadReceipts of the double's uploads.
func (nd *NodeDouble) Receipts() []*havenv1.UploadReceipt {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return append([]*havenv1.UploadReceipt(nil), nd.receipts...)
}

// Errors returns what went wrong in the double's tasks.
func (nd *NodeDouble) Errors() []error {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return append([]error(nil), nd.errs...)
}

// WaitFor waits until cond holds of the double or ctx ends.
func (nd *NodeDouble) WaitFor(ctx context.Context, cond func(*NodeDouble) bool) error {
	for {
		nd.mu.Lock()
		ch := nd.changed
		nd.mu.Unlock()
		if cond(nd) {
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
