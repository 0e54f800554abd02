package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// watchRun follows a run through the API's own WatchRun, writing each
// event as it comes: a JSON line each, or a server-sent event named run
// when the caller accepts text/event-stream.
func (h *Handler) watchRun(w http.ResponseWriter, r *http.Request) {
	id, ok := runID(w, r)
	if !ok || !newQuery(r).ok(w) {
		return
	}
	s := &eventStream{ctx: r.Context(), w: w, rc: http.NewResponseController(w),
		sse: strings.Contains(r.Header.Get("Accept"), mediaSSE)}
	// A run may take longer than the server's read and write timeouts,
	// which are for requests answered at once: past the read deadline
	// net/http would end the request's context, past the write deadline
	// the answer.
	for _, set := range []func(time.Time) error{s.rc.SetReadDeadline, s.rc.SetWriteDeadline} {
		if err := set(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
			h.fail(w, r, fmt.Errorf("clear the connection's deadline for a watch: %w", err))
			return
		}
	}
	if s.sse {
		stop := s.keepAlive(h.cfg.KeepAlive)
		defer stop()
	}
	err := h.cfg.API.WatchRun(&havenv1.WatchRunRequest{RunId: id}, s)
	switch {
	case err == nil:
	case !s.started:
		h.fail(w, r, err)
	case r.Context().Err() == nil:
		// The answer has begun: the error goes in the stream, last.
		st := status.Convert(err)
		s.write("error", map[string]Error{"error": {Code: httpStatus(st.Code()), Status: statusName(st.Code()), Message: st.Message()}})
	}
}

// eventStream is the HTTP answer as the WatchRun server stream
// (havenv1.Coordinator_WatchRunServer) the API's service writes to.
type eventStream struct {
	ctx context.Context
	w   http.ResponseWriter
	rc  *http.ResponseController
	sse bool

	mu      sync.Mutex // events and keep-alive comments write in turn
	started bool
}

// keepAlive writes a comment line every interval until stop is called;
// a server-sent event client ignores it. The first waits for the answer
// to start, so that an error before any event is still a plain error.
func (s *eventStream) keepAlive(interval time.Duration) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-s.ctx.Done():
				return
			case <-t.C:
			}
			s.mu.Lock()
			if s.started {
				if _, err := s.w.Write([]byte(": keep-alive\n\n")); err == nil {
					_ = s.rc.Flush()
				}
			}
			s.mu.Unlock()
		}
	}()
	return func() { close(done); <-finished }
}

var _ havenv1.Coordinator_WatchRunServer = (*eventStream)(nil)

// Send implements havenv1.Coordinator_WatchRunServer.
func (s *eventStream) Send(ev *havenv1.RunEvent) error {
	b, err := jsonOut.Marshal(ev)
	if err != nil {
		return err
	}
	return s.write("run", json.RawMessage(b))
}

// write sends one event and flushes it, starting the answer first.
func (s *eventStream) write(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		s.started = true
		ct := mediaNDJSON
		if s.sse {
			ct = mediaSSE
		}
		s.w.Header().Set("Content-Type", ct)
		s.w.WriteHeader(http.StatusOK)
	}
	if s.sse {
		_, err = s.w.Write([]byte("event: " + name + "\ndata: " + string(b) + "\n\n"))
	} else {
		_, err = s.w.Write(append(b, '\n'))
	}
	if err != nil {
		return err
	}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// Context implements grpc.ServerStream: the request's, with the caller.
func (s *eventStream) Context() context.Context { return s.ctx }

// The rest of grpc.ServerStream: WatchRun sends no metadata and receives
// nothing after its request.

func (s *eventStream) SetHeader(metadata.MD) error  { return nil }
func (s *eventStream) SendHeader(metadata.MD) error { return nil }
func (s *eventStream) SetTrailer(metadata.MD)       {}
func (s *eventStream) SendMsg(m any) error {
	ev, ok := m.(*havenv1.RunEvent)
	if !ok {
		return errors.New("httpapi: the watch stream sends RunEvents only")
	}
	return s.Send(ev)
}
func (s *eventStream) RecvMsg(any) error {
	return errors.New("httpapi: the watch stream receives nothing")
}
