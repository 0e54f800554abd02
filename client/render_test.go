package client

import (
	"bytes"
	"strings"
	"testing"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// SafeText escapes control and reordering characters and nothing else.
func TestSafeText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"commissioning", "commissioning"},
		{"café", "café"},
		{"a\nrun-FORGED RELEASED", `a\nrun-FORGED RELEASED`},
		{"tab\there", `tab\there`},
		{"\x1b[2Jcleared", `\x1b[2Jcleared`},
		{"\u202eevil", `\u202eevil`},
		{"bell\a\x7f", `bell\a\x7f`},
	} {
		if got := SafeText(tc.in); got != tc.want {
			t.Errorf("SafeText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A newline or escape sequence stored in a run's free text (a purpose,
// a cancellation reason, a site's error) cannot forge a line of `haven
// query status` output.
func TestWriteRunEscapesFreeText(t *testing.T) {
	run := &havenv1.Run{Id: "run-A", DefinitionId: "statins-chd", Purpose: "commissioning\nstate       released",
		State:     havenv1.RunState_RUN_STATE_CANCELLED,
		Requester: &havenv1.Requester{Id: "ana", Org: "QHM"}, Error: "stop\nreleased    9 rows\x1b[2J",
		PolicyReasons: []*havenv1.PolicyReason{{Code: "x", Message: "m\r\nforged"}},
		Coverage:      &havenv1.Coverage{SitesExpected: 1, Sites: []*havenv1.SiteStatus{{SiteOds: "A81001", Error: "bad\tcolumn\nline"}}}}
	var b bytes.Buffer
	WriteRun(&b, run)
	out := b.String()
	for _, forged := range []string{"\nstate       released", "\nreleased    9 rows", "\nforged", "\x1b", "\nline", "bad\tcolumn"} {
		if strings.Contains(out, forged) {
			t.Errorf("WriteRun output contains %q:\n%s", forged, out)
		}
	}
	if !strings.Contains(out, `commissioning\nstate       released`) || !strings.Contains(out, `stop\nreleased    9 rows\x1b[2J`) {
		t.Errorf("WriteRun does not show the escaped text:\n%s", out)
	}
	if err := Outcome(run); strings.Contains(err.Error(), "\n") {
		t.Errorf("Outcome: %q", err)
	}
}
