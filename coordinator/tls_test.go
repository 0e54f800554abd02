package coordinator_test

import (
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
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

// The standard health service answers anyone (a Kubernetes probe holds no
// network certificate), and says nothing but whether the coordinator
// serves; server reflection lists the services to an authenticated caller
// only, and every other method still wants an identity.
func TestHealthAndReflection(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	anon := n.DialAnonymous()
	for _, svc := range []string{"", "haven.v1.Coordinator", "haven.v1.NodeLink"} {
		resp, err := healthpb.NewHealthClient(anon).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: %v %v", svc, resp.GetStatus(), err)
		}
	}
	if _, err := healthpb.NewHealthClient(anon).Check(ctx, &healthpb.HealthCheckRequest{Service: "haven.v1.Nothing"}); status.Code(err) != codes.NotFound {
		t.Errorf("health of an unknown service: %v, want NotFound", err)
	}
	if _, err := havenv1.NewCoordinatorClient(anon).ListRuns(ctx, &havenv1.ListRunsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListRuns without identity: %v, want Unauthenticated", err)
	}

	list := func(conn *grpc.ClientConn) ([]string, error) {
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		// A refused stream may end before Send, which then returns io.EOF;
		// the status it ended with comes from Recv.
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		return names, stream.CloseSend()
	}
	if _, err := list(anon); status.Code(err) != codes.Unauthenticated {
		t.Errorf("reflection without identity: %v, want Unauthenticated", err)
	}
	names, err := list(analyst(n, "ana"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"haven.v1.Coordinator", "haven.v1.NodeLink", "arrow.flight.protocol.FlightService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, without %s", names, want)
		}
	}
}
