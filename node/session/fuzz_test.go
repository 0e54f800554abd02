package session

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/node/state"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// scriptedStream is a NodeLink stream from the node's side whose
// coordinator says exactly the scripted messages and then closes: a
// coordinator, or anyone holding its address and certificate, controls
// them. It spares the fuzzer a gRPC server per input.
type scriptedStream struct {
	ctx  context.Context
	mu   sync.Mutex
	msgs []*havenv1.CoordinatorMessage
}

func (s *scriptedStream) Send(*havenv1.NodeMessage) error { return s.ctx.Err() }
func (s *scriptedStream) Recv() (*havenv1.CoordinatorMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ctx.Err(); err != nil {
		return nil, err
	}
	if len(s.msgs) == 0 {
		return nil, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}
func (s *scriptedStream) Header() (metadata.MD, error) { return nil, nil }
func (s *scriptedStream) Trailer() metadata.MD         { return nil }
func (s *scriptedStream) CloseSend() error             { return nil }
func (s *scriptedStream) Context() context.Context     { return s.ctx }
func (s *scriptedStream) SendMsg(any) error            { return s.ctx.Err() }
func (s *scriptedStream) RecvMsg(m any) error {
	got, err := s.Recv()
	if err != nil {
		return err
	}
	proto.Merge(m.(proto.Message), got)
	return nil
}

func coordFrames(f *testing.F, ms ...*havenv1.CoordinatorMessage) []byte {
	var out []byte
	for _, m := range ms {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	return out
}

// FuzzCoordinatorMessages feeds the node's end of NodeLink any sequence of
// coordinator messages, the first as the answer to Register. The session
// must end the link with an error or a goodbye, never panic, and hand the
// node exactly the tasks and cancels that were sent after a Registered.
func FuzzCoordinatorMessages(f *testing.F) {
	registered := &havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Registered{Registered: &havenv1.Registered{
		SessionId: "s1", HeartbeatInterval: durationpb.New(time.Hour)}}}
	task := &havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Task{Task: &havenv1.Task{TaskId: "t1", RunId: "r1"}}}
	cancel := &havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_CancelTask{CancelTask: &havenv1.CancelTask{TaskId: "t1"}}}
	ack := &havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_HeartbeatAck{HeartbeatAck: &havenv1.HeartbeatAck{
		ServerTime: timestamppb.Now(), HeartbeatSentAt: timestamppb.Now()}}}
	bye := &havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_Goodbye{Goodbye: &havenv1.Goodbye{Reason: "restart",
		ReconnectAfter: durationpb.New(-time.Hour)}}}
	f.Add(coordFrames(f, registered, task, ack, cancel, bye))
	f.Add(coordFrames(f, task, registered))
	f.Add(coordFrames(f, registered, registered, task))
	f.Add([]byte{0, 0})

	f.Fuzz(func(t *testing.T, in []byte) {
		var msgs []*havenv1.CoordinatorMessage
		for len(in) >= 2 && len(msgs) < 64 {
			n := min(int(binary.BigEndian.Uint16(in)), len(in)-2)
			m := new(havenv1.CoordinatorMessage)
			if err := proto.Unmarshal(in[2:2+n], m); err != nil {
				return // gRPC would have refused the frame
			}
			msgs = append(msgs, m)
			in = in[2+n:]
		}
		var wantTasks, wantCancels int
		if len(msgs) > 0 && msgs[0].GetRegistered() != nil {
			for _, m := range msgs[1:] {
				if m.GetGoodbye() != nil || m.GetRejected() != nil {
					break
				}
				if m.GetTask() != nil {
					wantTasks++
				}
				if m.GetCancelTask() != nil {
					wantCancels++
				}
			}
		}
		j, _, err := state.OpenJournal(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		node := &nodeDouble{}
		ctx, stop := context.WithTimeout(context.Background(), time.Minute)
		defer stop()
		s, err := New(Config{
			Dial: func(ctx context.Context) (havenv1.NodeLink_ConnectClient, error) {
				return &scriptedStream{ctx: ctx, msgs: msgs}, nil
			},
			Handler: node, Journal: j, Logger: slog.New(slog.DiscardHandler),
			MissedHeartbeats: 1000,
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.connectAndServe(ctx); err == nil {
			t.Fatal("a link that the coordinator closed ended without an error")
		}
		tasks, cancels := node.seen()
		// A coordinator that names a tiny heartbeat interval gets its link
		// dropped as silent, perhaps before every message was read.
		exact := len(msgs) > 0 && (msgs[0].GetRegistered().GetHeartbeatInterval().AsDuration() <= 0 ||
			msgs[0].GetRegistered().GetHeartbeatInterval().AsDuration() >= time.Second)
		if len(tasks) > wantTasks || len(cancels) > wantCancels ||
			(exact && (len(tasks) != wantTasks || len(cancels) != wantCancels)) {
			t.Fatalf("node was handed %d tasks and %d cancels, want %d and %d", len(tasks), len(cancels), wantTasks, wantCancels)
		}
	})
}
