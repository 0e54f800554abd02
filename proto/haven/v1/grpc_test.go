package havenv1

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// nodeLinkDouble is a test double for the coordinator's side of NodeLink,
// not a coordinator: it answers a Register with a Registered derived from
// it, sends the one Task it holds, and passes every message it receives to
// the test through got.
type nodeLinkDouble struct {
	UnimplementedNodeLinkServer
	task *Task
	got  chan *NodeMessage
}

func (s *nodeLinkDouble) Connect(stream NodeLink_ConnectServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	s.got <- first
	reg := first.GetRegister()
	if reg == nil {
		return stream.Send(&CoordinatorMessage{Body: &CoordinatorMessage_Rejected{Rejected: &Rejected{
			Code: RejectCode_REJECT_CODE_INVALID_REGISTER, Message: "first message must be Register"}}})
	}
	if err := stream.Send(&CoordinatorMessage{Body: &CoordinatorMessage_Registered{Registered: &Registered{
		SessionId:              "session-" + reg.GetSiteOds(),
		ServerTime:             reg.GetPause().GetSince(),
		AcceptedBundleRevision: reg.GetBundleRevision(),
	}}}); err != nil {
		return err
	}
	if err := stream.Send(&CoordinatorMessage{Body: &CoordinatorMessage_Task{Task: s.task}}); err != nil {
		return err
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		s.got <- m
	}
}

// coordinatorDouble is a test double for the Coordinator service: WatchRun
// streams the events it holds for the run asked about, NotFound for any
// other; every other method answers Unimplemented.
type coordinatorDouble struct {
	UnimplementedCoordinatorServer
	events map[string][]*RunEvent
}

func (s *coordinatorDouble) WatchRun(req *WatchRunRequest, stream Coordinator_WatchRunServer) error {
	events, ok := s.events[req.GetRunId()]
	if !ok {
		return status.Errorf(codes.NotFound, "run %q not found", req.GetRunId())
	}
	for _, e := range events {
		if err := stream.Send(e); err != nil {
			return err
		}
	}
	return nil
}

// serve starts a gRPC server on a loopback port with the services register
// adds and returns a client connection to it; both close when t ends.
func serve(t *testing.T, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	register(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", lis.Addr(), err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// testContext bounds a test's RPCs so that a broken server fails the test
// instead of hanging it. It is a guard, not a timing assertion.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNodeLinkConnect(t *testing.T) {
	ctx := testContext(t)
	double := &nodeLinkDouble{task: task(), got: make(chan *NodeMessage, 4)}
	conn := serve(t, func(s *grpc.Server) { RegisterNodeLinkServer(s, double) })

	stream, err := NewNodeLinkClient(conn).Connect(ctx)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	reg := register()
	sent := []*NodeMessage{
		{Body: &NodeMessage_Register{Register: reg}},
		{Body: &NodeMessage_TaskAccepted{TaskAccepted: &TaskAccepted{
			TaskId: task().GetTaskId(), SqlHash: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"}}},
	}
	if err := stream.Send(sent[0]); err != nil {
		t.Fatalf("send Register: %v", err)
	}

	want := []*CoordinatorMessage{
		{Body: &CoordinatorMessage_Registered{Registered: &Registered{
			SessionId: "session-A81001", ServerTime: at(-60), AcceptedBundleRevision: "rev-7"}}},
		{Body: &CoordinatorMessage_Task{Task: task()}},
	}
	for i, w := range want {
		got, err := stream.Recv()
		if err != nil {
			t.Fatalf("receive message %d: %v", i, err)
		}
		assertProtoEqual(t, got, w)
	}

	if err := stream.Send(sent[1]); err != nil {
		t.Fatalf("send TaskAccepted: %v", err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	if m, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: got message %v, error %v; want io.EOF", m, err)
	}

	for i, w := range sent {
		select {
		case got := <-double.got:
			assertProtoEqual(t, got, w)
		case <-ctx.Done():
			t.Fatalf("server never received message %d: %v", i, ctx.Err())
		}
	}
	select {
	case extra := <-double.got:
		t.Errorf("server received an extra message: %v", extra)
	default:
	}
}

func TestCoordinatorWatchRun(t *testing.T) {
	ctx := testContext(t)
	events := []*RunEvent{
		runEvent(1, RunEventKind_RUN_EVENT_KIND_SNAPSHOT, RunState_RUN_STATE_LINKING),
		runEvent(2, RunEventKind_RUN_EVENT_KIND_STATE_CHANGED, RunState_RUN_STATE_RELEASED),
	}
	double := &coordinatorDouble{events: map[string][]*RunEvent{"run-2025-0001": events}}
	client := NewCoordinatorClient(serve(t, func(s *grpc.Server) { RegisterCoordinatorServer(s, double) }))

	stream, err := client.WatchRun(ctx, &WatchRunRequest{RunId: "run-2025-0001"})
	if err != nil {
		t.Fatalf("WatchRun: %v", err)
	}
	var got []*RunEvent
	for {
		e, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("receive event %d: %v", len(got), err)
		}
		got = append(got, e)
	}
	if len(got) != len(events) {
		t.Fatalf("received %d events, want %d", len(got), len(events))
	}
	for i := range events {
		assertProtoEqual(t, got[i], events[i])
	}

	stream, err = client.WatchRun(ctx, &WatchRunRequest{RunId: "run-unknown"})
	if err != nil {
		t.Fatalf("WatchRun: %v", err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.NotFound {
		t.Errorf("WatchRun of an unknown run: got %v, want code NotFound", err)
	}
}

func assertProtoEqual(t *testing.T, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(want))
	}
}
