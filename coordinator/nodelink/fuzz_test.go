package nodelink

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/cdm"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// frames encodes messages as a fuzz input: each a 2-byte length, then its
// binary protobuf.
func frames(f *testing.F, ms ...*havenv1.NodeMessage) []byte {
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

// FuzzNodeMessages feeds the coordinator's side of NodeLink what a node
// (or anyone holding a node certificate) may send: a first message checked
// as Register, its reported outcomes turned into task messages, then any
// sequence of messages on the live link. Nothing may panic, and a message
// that Register accepts must have named the certificate's site.
func FuzzNodeMessages(f *testing.F) {
	reg := &havenv1.NodeMessage{Body: &havenv1.NodeMessage_Register{Register: &havenv1.Register{
		SiteOds: "A81001", SiteKind: havenv1.SiteKind_SITE_KIND_GP, CdmVersion: cdm.Version, RegisteredPopulation: 9000,
		UnreportedOutcomes: []*havenv1.TaskOutcome{{Outcome: &havenv1.TaskOutcome_Failed{Failed: &havenv1.TaskFailed{TaskId: "t1"}}}}}}}
	hb := &havenv1.NodeMessage{Body: &havenv1.NodeMessage_Heartbeat{Heartbeat: &havenv1.Heartbeat{SentAt: timestamppb.Now(), Paused: true, BundleRevision: "r1"}}}
	pause := &havenv1.NodeMessage{Body: &havenv1.NodeMessage_PauseState{PauseState: &havenv1.PauseState{Paused: true, Reason: "month-end"}}}
	acc := &havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskAccepted{TaskAccepted: &havenv1.TaskAccepted{TaskId: "t2"}}}
	f.Add(frames(f, reg, hb, pause, acc))
	f.Add(frames(f, reg, reg))
	f.Add(frames(f, hb))
	f.Add([]byte{0, 3, 0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := New(Config{Handler: nopHandler{}, Audit: nopAudit{}, HeartbeatInterval: time.Second,
			Members: map[string]cdm.SiteKind{"A81001": cdm.KindGP, "RXX": cdm.KindTrust}})
		if err != nil {
			t.Fatal(err)
		}
		var msgs []*havenv1.NodeMessage
		for len(in) >= 2 {
			n := int(binary.BigEndian.Uint16(in))
			in = in[2:]
			if n > len(in) {
				n = len(in)
			}
			m := new(havenv1.NodeMessage)
			if err := proto.Unmarshal(in[:n], m); err != nil {
				return // gRPC would have refused the frame
			}
			msgs = append(msgs, m)
			in = in[n:]
		}
		if len(msgs) == 0 {
			return
		}
		const cert = "A81001"
		reg := msgs[0].GetRegister()
		if code, _ := s.checkRegister(cert, reg); code != havenv1.RejectCode_REJECT_CODE_UNSPECIFIED {
			return
		}
		if reg.GetSiteOds() != cert {
			t.Fatalf("Register for site %q accepted on a link certified for %s", reg.GetSiteOds(), cert)
		}
		ctx := context.Background()
		for _, o := range reg.GetUnreportedOutcomes() {
			if m := wire.OutcomeMessage(o); m != nil {
				s.cfg.Handler.TaskMessage(ctx, cert, m)
			}
		}
		ss := newSession(cert, 4)
		s.mu.Lock()
		s.sites[cert] = &SiteInfo{ODS: cert, SessionID: ss.id}
		s.mu.Unlock()
		for _, m := range msgs[1:] {
			s.handle(ctx, ss, m)
		}
		ss.end("fuzz", false)
	})
}
