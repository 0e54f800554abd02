// Package client is Haven's commissioner client: it dials the coordinator
// with a network user certificate or a bearer token, browses the approved
// catalogue, checks and submits runs, follows them to their end, fetches
// and verifies released tables, and renders what it gets for people (text
// tables, CSV, JSON with provenance). haven query and the demo use it, and
// the portal (in process, not over the network) parses form values and
// writes CSV with it; cmd/haven holds only flags and wiring.
//
// Errors from the coordinator come back as Explain makes them: a label a
// person can act on ("not permitted: …") in front of the coordinator's
// message, with the gRPC status still reachable through errors.As.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow/flight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/internal/pki"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// maxRecvBytes bounds one message from the coordinator: a page of runs or
// definitions, or a batch of a released table.
const maxRecvBytes = 64 << 20

// Config says how to reach the coordinator and who is asking: a network
// user certificate (CertFile and KeyFile) or, when those are empty, a
// bearer token (TokenFile).
type Config struct {
	// Addr is the coordinator's host:port.
	Addr string
	// CAFile is the network CA certificate the coordinator's certificate
	// is checked against.
	CAFile string
	// CertFile and KeyFile are a network user certificate and its key.
	CertFile, KeyFile string
	// TokenFile holds a bearer token, used when there is no certificate.
	TokenFile string
	// ServerName is the name to check the coordinator's certificate for,
	// if not Addr's host.
	ServerName string
	// Program names the client in messages, e.g. "haven query".
	Program string
	// Now is the clock certificates are checked against; time.Now if nil.
	Now func() time.Time
}

// Client is a connection to the coordinator as one commissioner.
type Client struct {
	conn  *grpc.ClientConn
	coord havenv1.CoordinatorClient
}

// Dial checks cfg's credentials and connects. A certificate that the
// coordinator would refuse (another CA, expired, not a user's) is named
// here, before the coordinator could only say that the handshake failed.
// The connection is made lazily, on the first call.
func Dial(cfg Config) (*Client, error) {
	var opts []grpc.DialOption
	switch {
	case cfg.CertFile != "" || cfg.KeyFile != "":
		if cfg.CertFile == "" || cfg.KeyFile == "" {
			return nil, errors.New("a certificate and its key go together")
		}
		now := time.Now
		if cfg.Now != nil {
			now = cfg.Now
		}
		id, err := pki.CheckClientCert(cfg.CertFile, cfg.CAFile, now())
		if err != nil {
			return nil, err
		}
		if id.Kind != pki.KindUser {
			program := cfg.Program
			if program == "" {
				program = "a commissioner client"
			}
			return nil, fmt.Errorf("certificate %s is a %s certificate (%s); %s needs a user certificate", cfg.CertFile, id.Kind, id, program)
		}
		tc, err := pki.ClientTLS(cfg.CertFile, cfg.KeyFile, cfg.CAFile, cfg.ServerName)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	case cfg.TokenFile != "":
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token: %w", err)
		}
		token := strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("token file %s is empty", cfg.TokenFile)
		}
		pool, err := pki.CertPool(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts,
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: cfg.ServerName, MinVersion: tls.VersionTLS13})),
			grpc.WithPerRPCCredentials(BearerToken(token)))
	default:
		return nil, errors.New("no credentials: a user certificate and key, or a bearer token file")
	}
	opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvBytes)))
	conn, err := grpc.NewClient(cfg.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("coordinator %s: %w", cfg.Addr, err)
	}
	return &Client{conn: conn, coord: havenv1.NewCoordinatorClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Coordinator is the raw commissioner API, for calls this package does not
// wrap.
func (c *Client) Coordinator() havenv1.CoordinatorClient { return c.coord }

// flight is the coordinator's Flight service, which serves released tables.
func (c *Client) flight() flight.FlightServiceClient { return flight.NewFlightServiceClient(c.conn) }

// rpcError is a coordinator error as Explain words it; it unwraps to the
// gRPC status error, so status.Code and errors.As still see the code.
type rpcError struct {
	msg string
	err error
}

func (e *rpcError) Error() string { return e.msg }
func (e *rpcError) Unwrap() error { return e.err }

// GRPCStatus lets status.Code and status.FromError read the coordinator's
// status through the explanation.
func (e *rpcError) GRPCStatus() *status.Status { s, _ := status.FromError(e.err); return s }

// Explain turns a coordinator error into one a person can act on: a refused
// TLS handshake says why, and every status gets a label for its code in
// front of the coordinator's message. Other errors are returned as they
// are.
func Explain(err error) error {
	if err == nil {
		return nil
	}
	if _, done := errors.AsType[*rpcError](err); done {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if cause := pki.HandshakeCause(err); cause != "" && st.Code() == codes.Unavailable {
		return &rpcError{msg: fmt.Sprintf("the coordinator refused the TLS handshake: %s (%s)", cause, st.Message()), err: err}
	}
	label := map[codes.Code]string{
		codes.InvalidArgument:    "invalid request",
		codes.NotFound:           "not found",
		codes.PermissionDenied:   "not permitted",
		codes.Unauthenticated:    "not authenticated",
		codes.FailedPrecondition: "not possible now",
		codes.Unavailable:        "coordinator unavailable",
		codes.DeadlineExceeded:   "timed out",
		codes.ResourceExhausted:  "too much",
	}[st.Code()]
	if label == "" {
		label = strings.ToLower(st.Code().String())
	}
	return &rpcError{msg: fmt.Sprintf("%s: %s", label, st.Message()), err: err}
}

// BearerToken is per-RPC credentials that send a bearer token, for a
// commissioner without a certificate (a portal session, a notebook). It
// insists on a secure transport, so a token never crosses the network in
// clear.
type BearerToken string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t BearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (BearerToken) RequireTransportSecurity() bool { return true }

var _ credentials.PerRPCCredentials = BearerToken("")
