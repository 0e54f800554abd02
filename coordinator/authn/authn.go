// Package authn decides who is calling the coordinator: a node, by the
// site ODS code its network client certificate names, or a commissioner or
// operator, by their user certificate or a bearer token whose SHA-256 the
// configuration lists. Every RPC on the coordinator's port passes through
// its interceptors; a handler reads the caller with FromContext and never
// from a request field.
package authn

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/internal/pki"
)

// Kind is the sort of caller.
type Kind string

// Kinds of caller.
const (
	KindNode Kind = "node" // a site's node
	KindUser Kind = "user" // a commissioner, analyst or operator
)

// Principal is an authenticated caller.
type Principal struct {
	Kind Kind
	// ODS is a node's site.
	ODS string
	// ID, Org and Roles describe a user.
	ID    string
	Org   string
	Roles []string
	// Operator reports that one of the user's roles is an operator role:
	// the user may see and act on every run.
	Operator bool
	// Method is how the caller proved who they are: "certificate",
	// "token" or, through the portal, "oidc".
	Method string
}

// String names the principal for logs and the audit log.
func (p Principal) String() string {
	if p.Kind == KindNode {
		return "node " + p.ODS
	}
	return fmt.Sprintf("user %s (%s)", p.ID, p.Org)
}

// Actor is the principal's name in an audit entry: a site's ODS code or a
// user id.
func (p Principal) Actor() string {
	if p.Kind == KindNode {
		return p.ODS
	}
	return p.ID
}

type ctxKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal an interceptor authenticated.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// User is a bearer-token user.
type User struct {
	ID    string
	Org   string
	Roles []string
	// TokenSHA256 is the lower-case hex SHA-256 of the user's token.
	TokenSHA256 string
}

// Authenticator authenticates callers.
type Authenticator struct {
	tokens        map[[sha256.Size]byte]User
	operatorRoles []string
}

// New returns an authenticator that knows users by token, and treats the
// roles in operatorRoles as operators.
func New(users []User, operatorRoles []string) (*Authenticator, error) {
	a := &Authenticator{tokens: map[[sha256.Size]byte]User{}, operatorRoles: slices.Clone(operatorRoles)}
	for _, u := range users {
		b, err := hex.DecodeString(u.TokenSHA256)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("user %s: token hash is not a hex SHA-256", u.ID)
		}
		var k [sha256.Size]byte
		copy(k[:], b)
		if _, dup := a.tokens[k]; dup {
			return nil, fmt.Errorf("user %s: the same token is configured twice", u.ID)
		}
		u.Roles = slices.Sorted(slices.Values(u.Roles))
		a.tokens[k] = u
	}
	return a, nil
}

// ErrUnauthenticated is wrapped by every authentication failure.
var ErrUnauthenticated = errors.New("unauthenticated")

// Authenticate identifies the caller of the RPC whose context is ctx: by
// its verified client certificate if it offered one, otherwise by an
// "authorization: Bearer <token>" header.
func (a *Authenticator) Authenticate(ctx context.Context) (Principal, error) {
	var state *tls.ConnectionState
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			state = &info.State
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return a.AuthenticateTLS(state, md.Get("authorization"))
}

// AuthenticateTLS identifies a caller by the TLS connection it came on
// (nil for none) and the values of its authorization header: by its
// verified client certificate if it offered one, otherwise by a bearer
// token. Authenticate uses it for gRPC, and the HTTP API for HTTP, so
// that both know a caller by the same proof.
func (a *Authenticator) AuthenticateTLS(state *tls.ConnectionState, authorization []string) (Principal, error) {
	if state != nil && len(state.VerifiedChains) > 0 {
		id, err := pki.PeerIdentity(*state)
		if err != nil {
			return Principal{}, fmt.Errorf("%w: client certificate: %v", ErrUnauthenticated, err)
		}
		switch id.Kind {
		case pki.KindNode:
			return Principal{Kind: KindNode, ODS: id.ODS, Method: "certificate"}, nil
		case pki.KindUser:
			return a.user(id.ID, id.Org, id.Roles, "certificate"), nil
		}
		return Principal{}, fmt.Errorf("%w: a %s certificate cannot call the coordinator", ErrUnauthenticated, id.Kind)
	}
	if len(authorization) == 0 {
		return Principal{}, fmt.Errorf("%w: present a network client certificate or an authorization bearer token", ErrUnauthenticated)
	}
	if len(authorization) > 1 {
		return Principal{}, fmt.Errorf("%w: more than one authorization header", ErrUnauthenticated)
	}
	scheme, token, ok := strings.Cut(authorization[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
		return Principal{}, fmt.Errorf("%w: authorization header is not \"Bearer <token>\"", ErrUnauthenticated)
	}
	u, ok := a.tokens[sha256.Sum256([]byte(strings.TrimSpace(token)))]
	if !ok {
		return Principal{}, fmt.Errorf("%w: unknown bearer token", ErrUnauthenticated)
	}
	return a.user(u.ID, u.Org, u.Roles, "token"), nil
}

// User returns the principal of a user whose identity was proved some
// other way than this package's (the portal's OpenID Connect sign-in,
// method "oidc"), marked operator by the same roles as every other user,
// so that every face of the coordinator treats the same person alike.
func (a *Authenticator) User(id, org string, roles []string, method string) Principal {
	return a.user(id, org, slices.Sorted(slices.Values(roles)), method)
}

func (a *Authenticator) user(id, org string, roles []string, method string) Principal {
	p := Principal{Kind: KindUser, ID: id, Org: org, Roles: slices.Clone(roles), Method: method}
	for _, r := range roles {
		if slices.Contains(a.operatorRoles, r) {
			p.Operator = true
		}
	}
	return p
}

// Full method names whose callers must be nodes; every other method wants
// a user, except the Flight methods Haven does not implement, which any
// authenticated caller may reach to be told so.
const (
	nodeLinkService    = "/haven.v1.NodeLink/"
	coordinatorService = "/haven.v1.Coordinator/"
	flightDoPut        = "/arrow.flight.protocol.FlightService/DoPut"
	flightDoGet        = "/arrow.flight.protocol.FlightService/DoGet"
	flightList         = "/arrow.flight.protocol.FlightService/ListFlights"
	flightInfo         = "/arrow.flight.protocol.FlightService/GetFlightInfo"
	flightSchema       = "/arrow.flight.protocol.FlightService/GetSchema"
)

// RequiredKind is the kind of caller a method is for; ok is false for a
// method any authenticated caller may reach.
func RequiredKind(fullMethod string) (k Kind, ok bool) {
	switch {
	case strings.HasPrefix(fullMethod, nodeLinkService), fullMethod == flightDoPut:
		return KindNode, true
	case strings.HasPrefix(fullMethod, coordinatorService), fullMethod == flightDoGet, fullMethod == flightList,
		fullMethod == flightInfo, fullMethod == flightSchema:
		return KindUser, true
	}
	return "", false
}

func (a *Authenticator) check(ctx context.Context, fullMethod string) (context.Context, error) {
	if Public(fullMethod) {
		return ctx, nil
	}
	p, err := a.Authenticate(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if want, ok := RequiredKind(fullMethod); ok && p.Kind != want {
		if p.Kind == KindNode {
			return nil, status.Errorf(codes.PermissionDenied, "%s is for users; the caller presented a node certificate (site %s), which cannot call the commissioner API: use a user certificate or token",
				fullMethod, p.ODS)
		}
		return nil, status.Errorf(codes.PermissionDenied, "%s is for %ss; the caller is %s", fullMethod, want, p)
	}
	return NewContext(ctx, p), nil
}

// healthService is the standard gRPC health service's prefix.
const healthService = "/grpc.health.v1.Health/"

// Public reports whether the method needs no caller identity: only the
// standard health service, which says whether the coordinator serves and
// nothing else, so that load balancers and Kubernetes probes, which hold
// no network certificate, can ask.
func Public(fullMethod string) bool { return strings.HasPrefix(fullMethod, healthService) }

// UnaryInterceptor authenticates every unary RPC.
func (a *Authenticator) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.check(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor authenticates every streaming RPC.
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.check(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &stream{ServerStream: ss, ctx: ctx})
	}
}

// stream is a ServerStream whose context carries the principal.
type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }
