package coordinator_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/internal/pki"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// A refused certificate is refused with its cause named on both sides:
// the caller's error and the coordinator's log. Before, a certificate
// from another CA was silently not sent and the caller was told to
// "present a network client certificate".
func TestTLSRefusalsNameTheCause(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	dir := t.TempDir()

	rogue, _, _, err := pki.NewCA("Rogue CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, c, k, err := rogue.Issue(pki.Request{Kind: pki.KindUser, ID: "demo-commissioner", Org: "QHM", Roles: []string{"analyst"}})
	if err != nil {
		t.Fatal(err)
	}
	foreignCert, foreignKey, err := pki.WriteFiles(filepath.Join(dir, "rogue"), "user", c, k)
	if err != nil {
		t.Fatal(err)
	}
	// Valid for a nanosecond: expired by the time it is used.
	_, c, k, err = n.CA.Issue(pki.Request{Kind: pki.KindUser, ID: "old", Org: "QHM", Roles: []string{"analyst"}, Validity: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	expiredCert, expiredKey, err := pki.WriteFiles(filepath.Join(dir, "expired"), "user", c, k)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, cert, key string
		client, log     string
	}{
		{"another CA", foreignCert, foreignKey, "unknown certificate authority", "not issued by this network's CA"},
		{"expired", expiredCert, expiredKey, "expired certificate", "has expired"},
	} {
		_, err := havenv1.NewCoordinatorClient(n.Dial(tc.cert, tc.key)).ListRuns(ctx, &havenv1.ListRunsRequest{})
		// In TLS 1.3 the client may finish its side of the handshake and
		// write before the coordinator's alert arrives, and then sees a
		// broken pipe; when the alert does arrive it names the cause.
		// Either way it is not told to present a certificate it did
		// present. haven query checks its certificate before dialling
		// (pki.CheckClientCert), so a person is told the cause there.
		if status.Code(err) != codes.Unavailable || strings.Contains(err.Error(), "present a network client certificate") {
			t.Errorf("%s: %v, want Unavailable", tc.name, err)
		}
		if cause := pki.HandshakeCause(err); cause != "" && !strings.Contains(err.Error(), tc.client) {
			t.Errorf("%s: the client's error %v names the wrong cause %q", tc.name, err, cause)
		}
		for !strings.Contains(n.Logs.String(), tc.log) {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: the coordinator's log does not say %q:\n%s", tc.name, tc.log, n.Logs.String())
			case <-time.After(20 * time.Millisecond): // polling the log, not a timing assumption
			}
		}
	}

	nodeCert, nodeKey := n.NodeCert("A81001")
	_, err = havenv1.NewCoordinatorClient(n.Dial(nodeCert, nodeKey)).ListRuns(ctx, &havenv1.ListRunsRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "node certificate (site A81001)") {
		t.Errorf("a node certificate on the commissioner API: %v", err)
	}
}
