package nodelink

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/audit"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

type nopHandler struct{}

func (nopHandler) TaskMessage(context.Context, string, *havenv1.NodeMessage) {}
func (nopHandler) NodeConnected(context.Context, SiteInfo, []string)         {}
func (nopHandler) NodeDisconnected(context.Context, string)                  {}

type nopAudit struct{}

func (nopAudit) Append(context.Context, audit.Record) (audit.Entry, error) { return audit.Entry{}, nil }

func TestCheckRegister(t *testing.T) {
	s, err := New(Config{Handler: nopHandler{}, Audit: nopAudit{}, HeartbeatInterval: time.Second,
		Members: map[string]cdm.SiteKind{"A81001": cdm.KindGP, "RXX": cdm.KindTrust}})
	if err != nil {
		t.Fatal(err)
	}
	gp := func(edit func(*havenv1.Register)) *havenv1.Register {
		r := &havenv1.Register{SiteOds: "A81001", SiteKind: havenv1.SiteKind_SITE_KIND_GP, CdmVersion: cdm.Version, RegisteredPopulation: 9000}
		if edit != nil {
			edit(r)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		cert string
		reg  *havenv1.Register
		code havenv1.RejectCode
		msg  string
	}{
		{"member", "A81001", gp(nil), havenv1.RejectCode_REJECT_CODE_UNSPECIFIED, ""},
		{"no register", "A81001", nil, havenv1.RejectCode_REJECT_CODE_INVALID_REGISTER, "must be Register"},
		{"other site", "B82005", gp(nil), havenv1.RejectCode_REJECT_CODE_IDENTITY_MISMATCH, `certificate names site "B82005", Register says "A81001"`},
		{"no kind", "A81001", gp(func(r *havenv1.Register) { r.SiteKind = 0 }), havenv1.RejectCode_REJECT_CODE_INVALID_REGISTER, "no site_kind"},
		{"wrong kind", "A81001", gp(func(r *havenv1.Register) { r.SiteKind = havenv1.SiteKind_SITE_KIND_TRUST }), havenv1.RejectCode_REJECT_CODE_INVALID_REGISTER, "is a gp site"},
		{"not a member", "Y99999", gp(func(r *havenv1.Register) { r.SiteOds = "Y99999" }), havenv1.RejectCode_REJECT_CODE_UNKNOWN_SITE, "not a member"},
		{"newer CDM", "A81001", gp(func(r *havenv1.Register) { r.CdmVersion = cdm.Version + 1 }), havenv1.RejectCode_REJECT_CODE_UNSUPPORTED_VERSION, "CDM version"},
		{"negative population", "A81001", gp(func(r *havenv1.Register) { r.RegisteredPopulation = -1 }), havenv1.RejectCode_REJECT_CODE_INVALID_REGISTER, "negative"},
	} {
		code, msg := s.checkRegister(tc.cert, tc.reg)
		if code != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %s %q, want %s %q", tc.name, code, msg, tc.code, tc.msg)
		}
	}
}

func TestSendToAbsentSite(t *testing.T) {
	s, err := New(Config{Handler: nopHandler{}, Audit: nopAudit{}, HeartbeatInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send("A81001", &havenv1.CoordinatorMessage{}); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("Send to a site with no link: %v", err)
	}
	ss := newSession("A81001", 1)
	if err := ss.send(&havenv1.CoordinatorMessage{}); err != nil {
		t.Fatal(err)
	}
	if err := ss.send(&havenv1.CoordinatorMessage{}); err == nil || !strings.Contains(err.Error(), "queue is full") {
		t.Errorf("a full queue: %v", err)
	}
	ss.end("test", true)
	if err := ss.send(&havenv1.CoordinatorMessage{}); err == nil {
		t.Error("send after end succeeded")
	}
}
