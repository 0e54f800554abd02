package session

import (
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// link is one registered NodeLink stream.
//
// It also works out when an outcome sent on it has certainly been read.
// The stream is ordered, so an acknowledged heartbeat proves that the
// coordinator read everything sent before that heartbeat. Each outcome
// sent is stamped with the number of heartbeats sent before it; an ack for
// a later heartbeat confirms it.
type link struct {
	stream    havenv1.NodeLink_ConnectClient
	sessionID string

	sendMu sync.Mutex // gRPC streams allow one sender at a time

	mu         sync.Mutex
	last       time.Time        // last message from the coordinator
	busy       bool             // the receive loop is handling a message
	heartbeats int64            // heartbeats sent so far
	sentAt     map[int64]int64  // heartbeat sent_at (Unix ns) → its number
	inDoubt    map[string]int64 // task id → heartbeats sent before its outcome
}

func newLink(stream havenv1.NodeLink_ConnectClient, sessionID string, now time.Time) *link {
	return &link{
		stream:    stream,
		sessionID: sessionID,
		last:      now,
		sentAt:    map[int64]int64{},
		inDoubt:   map[string]int64{},
	}
}

// send sends msg. If msg carries the outcome of taskID, the outcome is in
// doubt until a later heartbeat is acknowledged.
func (l *link) send(msg *havenv1.NodeMessage, taskID string) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	if taskID != "" {
		l.mu.Lock()
		l.inDoubt[taskID] = l.heartbeats
		l.mu.Unlock()
	}
	return l.stream.Send(msg)
}

// sendHeartbeat sends hb, numbering it.
func (l *link) sendHeartbeat(hb *havenv1.Heartbeat) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	l.mu.Lock()
	l.heartbeats++
	l.sentAt[hb.GetSentAt().AsTime().UnixNano()] = l.heartbeats
	l.mu.Unlock()
	return l.stream.Send(&havenv1.NodeMessage{Body: &havenv1.NodeMessage_Heartbeat{Heartbeat: hb}})
}

// acked records the ack of the heartbeat sent at sentAt and returns the
// task ids whose outcomes it confirms.
func (l *link) acked(sentAt *timestamppb.Timestamp) []string {
	if sentAt == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	key := sentAt.AsTime().UnixNano()
	n, ok := l.sentAt[key]
	if !ok {
		return nil
	}
	// Acks come in order; earlier heartbeats need no more tracking.
	for k, v := range l.sentAt {
		if v <= n {
			delete(l.sentAt, k)
		}
	}
	var ids []string
	for id, before := range l.inDoubt {
		if before < n {
			ids = append(ids, id)
			delete(l.inDoubt, id)
		}
	}
	return ids
}

func (l *link) heard(now time.Time) {
	l.mu.Lock()
	l.last = now
	l.mu.Unlock()
}

// handling records that the receive loop has started (busy) or finished
// handling a message; finishing counts as hearing the coordinator, since
// the loop read nothing meanwhile.
func (l *link) handling(busy bool, now time.Time) {
	l.mu.Lock()
	l.busy = busy
	l.last = now
	l.mu.Unlock()
}

// quiet is how long the coordinator has been silent as this link can
// tell: zero while the receive loop is handling a message, when nothing
// is read and silence proves nothing.
func (l *link) quiet(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy {
		return 0
	}
	return now.Sub(l.last)
}
