package nodetest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/node/state"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// CoordinatorDouble is a test double of the coordinator: a small gRPC
// server that plays the coordinator's side of NodeLink and receives
// Flight DoPut uploads, on one port, over mutual TLS. It records what
// nodes send, and lets a test send tasks, drop links, and make the
// coordinator unreachable for links or uploads.
type CoordinatorDouble struct {
	Addr string

	heartbeat time.Duration
	srv       *grpc.Server

	mu         sync.Mutex
	registers  []*havenv1.Register
	messages   []*havenv1.NodeMessage
	heartbeats int
	links      []*doubleLink
	uploads    map[string]*Upload
	refuseLink bool
	refusePuts int
	onMessage  func(*havenv1.NodeMessage)
}

type doubleLink struct {
	ods  string // the site the link's certificate names
	out  chan *havenv1.CoordinatorMessage
	drop chan struct{}
	once sync.Once
}

// Upload is one DoPut the double received in full.
type Upload struct {
	TaskID  string
	Schema  *arrow.Schema
	Records []arrow.Record
	Rows    int64
	Bytes   int64
	Batches int64
	// BatchBytes is the data_body length of each record batch.
	BatchBytes []int64
}

// StartCoordinator serves a coordinator double on a local port with the
// given server TLS configuration. Nodes are told to heartbeat every
// heartbeat.
func StartCoordinator(t testing.TB, serverTLS *tls.Config, heartbeat time.Duration) *CoordinatorDouble {
	t.Helper()
	return StartCoordinatorAt(t, "127.0.0.1:0", serverTLS, heartbeat)
}

// StartCoordinatorAt is StartCoordinator on a given address: where a real
// coordinator listened, so that its nodes reconnect to the double.
func StartCoordinatorAt(t testing.TB, addr string, serverTLS *tls.Config, heartbeat time.Duration) *CoordinatorDouble {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &CoordinatorDouble{Addr: lis.Addr().String(), heartbeat: heartbeat, uploads: map[string]*Upload{}}
	c.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)))
	havenv1.RegisterNodeLinkServer(c.srv, &nodeLinkDouble{c: c})
	flight.RegisterFlightServiceServer(c.srv, &flightDouble{c: c})
	go c.srv.Serve(lis)
	t.Cleanup(func() {
		c.srv.Stop()
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, u := range c.uploads {
			for _, r := range u.Records {
				r.Release()
			}
		}
	})
	return c
}

// Close stops the double at once, dropping every link; the test's
// cleanup would do the same later.
func (c *CoordinatorDouble) Close() { c.srv.Stop() }

// Registers returns every Register received, oldest first.
func (c *CoordinatorDouble) Registers() []*havenv1.Register {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.registers)
}

// Messages returns every message received after a Register, heartbeats
// left out, oldest first.
func (c *CoordinatorDouble) Messages() []*havenv1.NodeMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.messages)
}

// Heartbeats is the number of heartbeats received.
func (c *CoordinatorDouble) Heartbeats() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heartbeats
}

// Upload returns the upload received for a task.
func (c *CoordinatorDouble) Upload(taskID string) (*Upload, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, ok := c.uploads[taskID]
	return u, ok
}

// Uploads returns every upload received, one per task.
func (c *CoordinatorDouble) Uploads() []*Upload {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Upload, 0, len(c.uploads))
	for _, u := range c.uploads {
		out = append(out, u)
	}
	return out
}

// Outcome returns the outcome of a task as the node reported it, live or
// in a Register, whichever came last.
func (c *CoordinatorDouble) Outcome(taskID string) *havenv1.TaskOutcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out *havenv1.TaskOutcome
	for _, m := range c.messages {
		switch b := m.GetBody().(type) {
		case *havenv1.NodeMessage_TaskDone:
			if b.TaskDone.GetTaskId() == taskID {
				out = &havenv1.TaskOutcome{Outcome: &havenv1.TaskOutcome_Done{Done: b.TaskDone}}
			}
		case *havenv1.NodeMessage_TaskFailed:
			if b.TaskFailed.GetTaskId() == taskID {
				out = &havenv1.TaskOutcome{Outcome: &havenv1.TaskOutcome_Failed{Failed: b.TaskFailed}}
			}
		case *havenv1.NodeMessage_TaskRefused:
			if b.TaskRefused.GetTaskId() == taskID {
				out = &havenv1.TaskOutcome{Outcome: &havenv1.TaskOutcome_Refused{Refused: b.TaskRefused}}
			}
		}
	}
	if out != nil {
		return out
	}
	for _, r := range c.registers {
		for _, o := range r.GetUnreportedOutcomes() {
			if state.OutcomeTaskID(o) == taskID {
				out = o
			}
		}
	}
	return out
}

// Connected reports whether a link is up.
func (c *CoordinatorDouble) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.links) > 0
}

// SendTask sends a task down the newest link.
func (c *CoordinatorDouble) SendTask(t *havenv1.Task) error {
	return c.send(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Task{Task: t}})
}

// SendTaskTo sends a task down the newest link of one site.
func (c *CoordinatorDouble) SendTaskTo(ods string, t *havenv1.Task) error {
	c.mu.Lock()
	var l *doubleLink
	for _, x := range c.links {
		if x.ods == ods {
			l = x
		}
	}
	c.mu.Unlock()
	if l == nil {
		return fmt.Errorf("coordinator double: no link up from %s", ods)
	}
	select {
	case l.out <- &havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Task{Task: t}}:
		return nil
	case <-l.drop:
		return errors.New("coordinator double: link dropped")
	}
}

// ConnectedSites returns the sites with a link up.
func (c *CoordinatorDouble) ConnectedSites() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.links {
		if !slices.Contains(out, l.ods) {
			out = append(out, l.ods)
		}
	}
	return out
}

// SendCancel sends CancelTask down the newest link.
func (c *CoordinatorDouble) SendCancel(taskID string) error {
	return c.send(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_CancelTask{CancelTask: &havenv1.CancelTask{TaskId: taskID, Reason: "test"}}})
}

func (c *CoordinatorDouble) send(m *havenv1.CoordinatorMessage) error {
	c.mu.Lock()
	if len(c.links) == 0 {
		c.mu.Unlock()
		return errors.New("coordinator double: no link up")
	}
	l := c.links[len(c.links)-1]
	c.mu.Unlock()
	select {
	case l.out <- m:
		return nil
	case <-l.drop:
		return errors.New("coordinator double: link dropped")
	}
}

// DropLinks ends every link with Unavailable, as a coordinator restart or
// a network fault would.
func (c *CoordinatorDouble) DropLinks() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.links {
		l.once.Do(func() { close(l.drop) })
	}
}

// RefuseLinks makes new NodeLink calls fail with Unavailable while on.
func (c *CoordinatorDouble) RefuseLinks(on bool) {
	c.mu.Lock()
	c.refuseLink = on
	c.mu.Unlock()
}

// RefuseUploads makes the next n DoPut calls fail with Unavailable.
func (c *CoordinatorDouble) RefuseUploads(n int) {
	c.mu.Lock()
	c.refusePuts = n
	c.mu.Unlock()
}

// OnMessage sets a function called for every message a node sends after
// its Register, heartbeats included, before it is recorded.
func (c *CoordinatorDouble) OnMessage(f func(*havenv1.NodeMessage)) {
	c.mu.Lock()
	c.onMessage = f
	c.mu.Unlock()
}

type nodeLinkDouble struct {
	havenv1.UnimplementedNodeLinkServer
	c *CoordinatorDouble
}

func (d *nodeLinkDouble) Connect(stream grpc.BidiStreamingServer[havenv1.NodeMessage, havenv1.CoordinatorMessage]) error {
	c := d.c
	c.mu.Lock()
	refuse := c.refuseLink
	c.mu.Unlock()
	if refuse {
		return status.Error(codes.Unavailable, "coordinator double: refusing links")
	}
	id, err := peerIdentity(stream)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	c.mu.Lock()
	c.registers = append(c.registers, reg)
	c.mu.Unlock()
	if reg == nil || reg.GetSiteOds() != id.ODS {
		return stream.Send(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Rejected{Rejected: &havenv1.Rejected{
			Code: havenv1.RejectCode_REJECT_CODE_IDENTITY_MISMATCH, Message: fmt.Sprintf("certificate names site %q, Register says %q", id.ODS, reg.GetSiteOds()),
		}}})
	}
	// The link is listed before Registered goes: a test that sees the node
	// connected may send it a task at once (whatever is queued waits for
	// the opt-out list below, as on a real coordinator).
	l := &doubleLink{ods: id.ODS, out: make(chan *havenv1.CoordinatorMessage, 16), drop: make(chan struct{})}
	c.mu.Lock()
	c.links = append(c.links, l)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.links = slices.DeleteFunc(c.links, func(x *doubleLink) bool { return x == l })
		c.mu.Unlock()
	}()
	if err := stream.Send(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Registered{Registered: &havenv1.Registered{
		SessionId: fmt.Sprintf("double-%d", time.Now().UnixNano()), ServerTime: timestamppb.Now(),
		HeartbeatInterval: durationpb.New(c.heartbeat),
	}}}); err != nil {
		return err
	}
	// An empty network type 1 opt-out list, as a coordinator with no
	// practice's objections sends it: a node runs no task without one.
	if err := stream.Send(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_NetworkOptOuts{NetworkOptOuts: &havenv1.NetworkOptOuts{
		Version: &havenv1.NetworkOptOutVersion{Epoch: "double", Seq: 0},
	}}}); err != nil {
		return err
	}

	in := make(chan *havenv1.NodeMessage)
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case in <- m:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	for {
		// A dropped link handles nothing more, even if a message is
		// waiting too (select would pick at random).
		select {
		case <-l.drop:
			return status.Error(codes.Unavailable, "coordinator double: link dropped")
		default:
		}
		select {
		case <-l.drop:
			return status.Error(codes.Unavailable, "coordinator double: link dropped")
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case m := <-l.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case m := <-in:
			c.mu.Lock()
			hook := c.onMessage
			c.mu.Unlock()
			if hook != nil {
				hook(m)
			}
			c.mu.Lock()
			if m.GetHeartbeat() != nil {
				c.heartbeats++
			} else {
				c.messages = append(c.messages, m)
			}
			c.mu.Unlock()
			if hb := m.GetHeartbeat(); hb != nil {
				if err := stream.Send(&havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_HeartbeatAck{HeartbeatAck: &havenv1.HeartbeatAck{
					ServerTime: timestamppb.Now(), HeartbeatSentAt: hb.GetSentAt(),
				}}}); err != nil {
					return err
				}
			}
		}
	}
}

func peerIdentity(stream grpc.ServerStream) (pki.Identity, error) {
	p, ok := peer.FromContext(stream.Context())
	if !ok {
		return pki.Identity{}, errors.New("no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return pki.Identity{}, errors.New("not a TLS connection")
	}
	return pki.PeerIdentity(ti.State)
}

type flightDouble struct {
	flight.BaseFlightServer
	c *CoordinatorDouble
}

// countingReader counts data_body bytes of what a DoPut stream carries.
type countingReader struct {
	flight.FlightService_DoPutServer
	bodies []int64
}

func (r *countingReader) Recv() (*flight.FlightData, error) {
	fd, err := r.FlightService_DoPutServer.Recv()
	if err == nil && len(fd.DataBody) > 0 {
		r.bodies = append(r.bodies, int64(len(fd.DataBody)))
	}
	return fd, err
}

func (d *flightDouble) DoPut(stream flight.FlightService_DoPutServer) error {
	c := d.c
	c.mu.Lock()
	if c.refusePuts > 0 {
		c.refusePuts--
		c.mu.Unlock()
		return status.Error(codes.Unavailable, "coordinator double: refusing uploads")
	}
	c.mu.Unlock()
	id, err := peerIdentity(stream)
	if err != nil || id.Kind != pki.KindNode {
		return status.Error(codes.Unauthenticated, "uploads come from nodes")
	}
	cr := &countingReader{FlightService_DoPutServer: stream}
	rdr, err := flight.NewRecordReader(cr)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "read upload: %v", err)
	}
	defer rdr.Release()
	taskID, err := havenv1.ParseTaskDescriptor(rdr.LatestFlightDescriptor())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	u := &Upload{TaskID: taskID, Schema: rdr.Schema()}
	for rdr.Next() {
		rec := rdr.Record()
		rec.Retain()
		u.Records = append(u.Records, rec)
		u.Rows += rec.NumRows()
		u.Batches++
	}
	if err := rdr.Err(); err != nil {
		for _, r := range u.Records {
			r.Release()
		}
		return status.Errorf(codes.InvalidArgument, "read upload: %v", err)
	}
	u.BatchBytes = cr.bodies
	for _, b := range cr.bodies {
		u.Bytes += b
	}
	meta, err := proto.Marshal(&havenv1.UploadReceipt{TaskId: taskID, Rows: u.Rows, Bytes: u.Bytes, Batches: u.Batches})
	if err != nil {
		return err
	}
	c.mu.Lock()
	if old, ok := c.uploads[taskID]; ok {
		for _, r := range old.Records {
			r.Release()
		}
	}
	c.uploads[taskID] = u
	c.mu.Unlock()
	return stream.Send(&flight.PutResult{AppMetadata: meta})
}
