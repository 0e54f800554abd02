package authn

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestBearerTokens(t *testing.T) {
	a, err := New([]User{
		{ID: "dash", Org: "QHM", Roles: []string{"analyst"}, TokenSHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},             // "test"
		{ID: "ops", Org: "NHSE", Roles: []string{"operator", "analyst"}, TokenSHA256: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"}, // "test2"
	}, []string{"operator"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		header []string
		want   string // user id, or an error substring
		op     bool
	}{
		{"token", []string{"Bearer test"}, "dash", false},
		{"case of the scheme", []string{"bearer test2"}, "ops", true},
		{"no header", nil, "present a network client certificate or an authorization bearer token", false},
		{"unknown token", []string{"Bearer nope"}, "unknown bearer token", false},
		{"basic auth", []string{"Basic dGVzdDp0ZXN0"}, `not "Bearer <token>"`, false},
		{"two headers", []string{"Bearer test", "Bearer test2"}, "more than one", false},
		{"empty token", []string{"Bearer  "}, `not "Bearer <token>"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.header != nil {
				ctx = metadata.NewIncomingContext(ctx, metadata.MD{"authorization": tc.header})
			}
			p, err := a.Authenticate(ctx)
			if err != nil {
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v, want %q", err, tc.want)
				}
				return
			}
			if p.ID != tc.want || p.Kind != KindUser || p.Operator != tc.op || p.Method != "token" {
				t.Errorf("principal %+v, want %s (operator %v)", p, tc.want, tc.op)
			}
		})
	}
	if _, err := New([]User{{ID: "x", TokenSHA256: "abc"}}, nil); err == nil {
		t.Error("a malformed token hash was accepted")
	}
}

func TestRequiredKind(t *testing.T) {
	for method, want := range map[string]Kind{
		"/haven.v1.NodeLink/Connect":                         KindNode,
		"/arrow.flight.protocol.FlightService/DoPut":         KindNode,
		"/haven.v1.Coordinator/SubmitRun":                    KindUser,
		"/arrow.flight.protocol.FlightService/DoGet":         KindUser,
		"/arrow.flight.protocol.FlightService/ListFlights":   KindUser,
		"/arrow.flight.protocol.FlightService/GetFlightInfo": KindUser,
		"/arrow.flight.protocol.FlightService/GetSchema":     KindUser,
		"/arrow.flight.protocol.FlightService/DoAction":      "",
	} {
		if got, _ := RequiredKind(method); got != want {
			t.Errorf("%s: %q, want %q", method, got, want)
		}
	}
}

// Only the health service is public; reflection and every Haven method
// want an identity.
func TestPublic(t *testing.T) {
	for method, want := range map[string]bool{
		"/grpc.health.v1.Health/Check":                              true,
		"/grpc.health.v1.Health/Watch":                              true,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": false,
		"/haven.v1.Coordinator/ListRuns":                            false,
		"/arrow.flight.protocol.FlightService/DoGet":                false,
		"/grpc.health.v1.HealthX/Check":                             false,
		"/evil/grpc.health.v1.Health/Check":                         false,
	} {
		if got := Public(method); got != want {
			t.Errorf("Public(%q) = %v, want %v", method, got, want)
		}
	}
}

// User makes the same principal, operator flag included, as a token or
// certificate with the same identity would.
func TestUser(t *testing.T) {
	a, err := New(nil, []string{"operator"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		roles    []string
		operator bool
	}{
		{roles: []string{"analyst"}},
		{roles: []string{"operator", "analyst"}, operator: true},
		{roles: nil},
	} {
		p := a.User("ana", "QHM", tc.roles, "oidc")
		if p.Kind != KindUser || p.ID != "ana" || p.Org != "QHM" || p.Method != "oidc" || p.Operator != tc.operator {
			t.Errorf("roles %v: %+v", tc.roles, p)
		}
		if !slices.IsSorted(p.Roles) || len(p.Roles) != len(tc.roles) {
			t.Errorf("roles %v: principal's roles %v", tc.roles, p.Roles)
		}
	}
}
