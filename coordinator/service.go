// Package coordinator wires the coordinator service together: one gRPC
// server on one port, with mutual TLS, hosting NodeLink (the nodes' control
// links, coordinator/nodelink), the Coordinator service (the commissioners'
// API, coordinator/api) and Arrow Flight DoPut and DoGet
// (coordinator/flightsvc), all over one job store, one audit log and one
// verified governance bundle, with the dispatcher (coordinator/dispatch)
// running the runs.
//
// New opens everything and marks runs a previous process left unfinished
// as interrupted; Serve runs until its context ends, then stops in order:
// runs in progress are marked interrupted (their linked rows were only in
// memory), nodes are told Goodbye, RPCs drain, and the store and audit log
// are closed, losing nothing stored.
package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/admission"
	"github.com/havenhealth/haven/coordinator/api"
	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/authn"
	"github.com/havenhealth/haven/coordinator/config"
	"github.com/havenhealth/haven/coordinator/dispatch"
	"github.com/havenhealth/haven/coordinator/flightsvc"
	"github.com/havenhealth/haven/coordinator/httpapi"
	"github.com/havenhealth/haven/coordinator/metrics"
	"github.com/havenhealth/haven/coordinator/nodelink"
	"github.com/havenhealth/haven/coordinator/optoutrelay"
	"github.com/havenhealth/haven/coordinator/planner"
	"github.com/havenhealth/haven/coordinator/portal"
	"github.com/havenhealth/haven/coordinator/register"
	"github.com/havenhealth/haven/coordinator/store"
	"github.com/havenhealth/haven/internal/dirlock"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/policy"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// ShutdownTimeout bounds how long Serve waits for RPCs to drain.
const ShutdownTimeout = 10 * time.Second

// Service is a configured coordinator.
type Service struct {
	cfg     *config.Config
	log     *slog.Logger
	store   *store.SQLite
	audit   *audit.Log
	policy  *policy.Engine
	links   *nodelink.Server
	runs    *dispatch.Dispatcher
	grpc    *grpc.Server
	lock    *dirlock.Lock // the data directory, held until Close
	health  *health.Server
	metrics *metrics.Metrics
	// register is the public transparency register, portal the
	// commissioners' portal, httpAPI the commissioner API over HTTP and
	// metrics the Prometheus endpoint, each bound by New; nil when the
	// config serves none.
	register, portal, httpAPI, metricsHTTP *httpService
}

// httpService is an HTTP server on its own port beside the gRPC one.
type httpService struct {
	name string
	srv  *http.Server
	lis  net.Listener
}

func newHTTPService(name, addr string, h http.Handler, tlsCfg *tls.Config, log *slog.Logger) (*httpService, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return newHTTPServiceOn(name, lis, h, tlsCfg, log), nil
}

// newHTTPServiceOn is newHTTPService on a listener already bound.
func newHTTPServiceOn(name string, lis net.Listener, h http.Handler, tlsCfg *tls.Config, log *slog.Logger) *httpService {
	if tlsCfg != nil {
		lis = tls.NewListener(lis, tlsCfg)
	}
	return &httpService{name: name, lis: lis, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}}
}

// addr is where h listens; nil for none.
func (h *httpService) addr() net.Addr {
	if h == nil {
		return nil
	}
	return h.lis.Addr()
}

// Option sets what a Service takes besides its configuration file.
type Option func(*options)

type options struct {
	clock clockwork.Clock
}

// WithClock runs the dispatcher on c: the time runs are stamped with and
// the timers of their deadlines. Tests pass a fake clock to move a run
// past its deadline without waiting for it; without the option the
// service runs on the real clock.
func WithClock(c clockwork.Clock) Option {
	return func(o *options) { o.clock = c }
}

// New opens the store, the audit log and the governance bundle named by
// cfg, and marks every run left in progress by an earlier process as
// interrupted. It starts nothing; call Serve.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...Option) (_ *Service, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Service{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	tlsCfg, err := pki.ServerTLS(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.CA)
	if err != nil {
		return nil, err
	}
	key, err := os.ReadFile(cfg.Governance.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("read the board's public key: %w", err)
	}
	// The gauges read the parts below at each scrape, once they exist.
	s.metrics = metrics.New(metrics.Sources{
		ActiveRuns: func() map[string]int {
			if s.runs == nil {
				return nil
			}
			return s.runs.ActiveRuns()
		},
		Links: func() map[string]int {
			if s.links == nil {
				return nil
			}
			return s.connectedLinks()
		},
		AuditHead: func() uint64 {
			if s.audit == nil {
				return 0
			}
			seq, _ := s.audit.Head()
			return seq
		},
		StoreBytes: s.storeBytes,
	})
	if s.policy, err = policy.Load(ctx, policy.Config{BundlePath: cfg.Governance.Bundle, PublicKeyPEM: key, Logger: log,
		Observe: s.metrics.Decision}); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	// Before anything in the directory is opened: a second coordinator on
	// it would fork the audit chain.
	if s.lock, err = dirlock.Acquire(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("coordinator not started: %w", err)
	}
	if s.store, err = store.OpenSQLite(ctx, cfg.StorePath()); err != nil {
		return nil, err
	}
	var opened audit.Opened
	if s.audit, opened, err = audit.OpenAnchored(ctx, cfg.AuditPath(), s.store); err != nil {
		return nil, fmt.Errorf("coordinator not started: %w; job store %s (README: \"When the coordinator refuses to start\")",
			err, cfg.StorePath())
	}
	if opened.Adopted {
		seq, head := s.audit.Head()
		log.LogAttrs(ctx, slog.LevelInfo, "audit log anchored in the job store for the first time",
			slog.Uint64("entries", seq), slog.String("head", head))
	}
	if opened.Unanchored > 0 {
		log.LogAttrs(ctx, slog.LevelWarn, "audit log entries after the anchored head accepted (the machine stopped before the store recorded them)",
			slog.Uint64("entries", opened.Unanchored))
	}
	if err := prepareSpillDir(cfg.SpillPath(), log); err != nil {
		return nil, err
	}
	if err := s.interruptLeftovers(ctx, "the coordinator restarted while the run was in progress; its linked rows were held only for the process (in memory and spill files, which start-up removes)"); err != nil {
		return nil, err
	}

	users := make([]authn.User, len(cfg.Users))
	for i, u := range cfg.Users {
		users[i] = authn.User{ID: u.ID, Org: u.Org, Roles: u.Roles, TokenSHA256: u.TokenSHA256}
	}
	auth, err := authn.New(users, cfg.OperatorRoles)
	if err != nil {
		return nil, fmt.Errorf("config users: %w", err)
	}

	var members map[string]cdm.SiteKind
	var memberSites []planner.Site
	if len(cfg.Network.Sites) > 0 {
		members = map[string]cdm.SiteKind{}
		for _, m := range cfg.Network.Sites {
			members[m.ODS] = m.Kind
			memberSites = append(memberSites, planner.Site{ODS: m.ODS, Kind: m.Kind, Population: m.Population})
		}
	}
	// NodeLink hands task messages to the dispatcher, and the dispatcher
	// sends tasks down node links: handler breaks the cycle.
	handler := &lateHandler{}
	optOuts, err := optoutrelay.Open(ctx, s.store, nil)
	if err != nil {
		return nil, err
	}
	if pubs, hashes := optOuts.Size(); pubs > 0 {
		log.Info("network type 1 opt-out list loaded", "version", optOuts.Version().String(), "practices", pubs, "hashes", hashes)
	}
	if s.links, err = nodelink.New(nodelink.Config{Handler: handler, Audit: s.audit, Logger: log,
		HeartbeatInterval: cfg.Runs.HeartbeatInterval, OptOutInterval: cfg.Runs.OptOutInterval, Revision: s.policy.Revision, Members: members, OptOuts: optOuts}); err != nil {
		return nil, err
	}
	var signingKey ed25519.PrivateKey
	if cfg.Releases.SigningKey != "" {
		if signingKey, err = release.LoadPrivateKey(cfg.Releases.SigningKey); err != nil {
			return nil, err
		}
		log.Info("released tables are signed", "key_id", release.KeyID(signingKey.Public().(ed25519.PublicKey)))
	} else {
		log.Warn("releases.signing_key is not set: released tables are unsigned and haven query verify refuses them")
	}
	if s.runs, err = dispatch.New(dispatch.Config{Store: s.store, Audit: s.audit, Policy: s.policy, Links: s.links,
		LinkageMemoryBudget: int64(cfg.Linkage.MemoryBudget), SpillDir: cfg.SpillPath(),
		Members: memberSites, LinkageKeyID: cfg.Network.LinkageKeyID, Deadline: cfg.Runs.Deadline, MaxRunning: cfg.Runs.MaxRunning, Logger: log, Clock: o.clock, SigningKey: signingKey,
		Limits: &havenv1.UploadLimits{MaxRows: cfg.Uploads.MaxRows, MaxBytes: int64(cfg.Uploads.MaxBytes),
			MaxBatchBytes: int64(cfg.Uploads.MaxBatchBytes)}, Metrics: s.metrics}); err != nil {
		return nil, err
	}
	handler.d = s.runs

	s.grpc = grpc.NewServer(
		grpc.Creds(handshakeLog{TransportCredentials: credentials.NewTLS(tlsCfg), log: log}),
		grpc.ChainUnaryInterceptor(auth.UnaryInterceptor(), api.UnaryLimit()),
		grpc.ChainStreamInterceptor(auth.StreamInterceptor()),
		// One record batch travels in one message.
		grpc.MaxRecvMsgSize(int(cfg.Uploads.MaxBatchBytes)+1<<20),
		// Node links are long-lived and mostly idle.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
	)
	havenv1.RegisterNodeLinkServer(s.grpc, s.links)
	commissioners := api.New(s.policy, s.runs, admission.New(s.store), log)
	havenv1.RegisterCoordinatorServer(s.grpc, commissioners)
	flight.RegisterFlightServiceServer(s.grpc, flightsvc.New(uploads{s.runs}, s.runs, log))
	// The standard health service (no identity needed: authn.Public) and
	// server reflection (for any authenticated caller), so that probes and
	// grpcurl need no .proto files.
	s.health = health.NewServer()
	for _, name := range []string{"", havenv1.Coordinator_ServiceDesc.ServiceName, havenv1.NodeLink_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	if cfg.Register.Listen != "" {
		if err := s.openRegister(tlsCfg); err != nil {
			return nil, err
		}
	}
	if cfg.Portal.Listen != "" {
		if err := s.openPortal(tlsCfg, commissioners, auth); err != nil {
			return nil, err
		}
	}
	if cfg.HTTPAPI.Listen != "" {
		if err := s.openHTTPAPI(tlsCfg, commissioners, auth); err != nil {
			return nil, err
		}
	}
	if cfg.Metrics.Listen != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", s.metrics.Handler())
		if s.metricsHTTP, err = newHTTPService("metrics.listen", cfg.Metrics.Listen, mux, nil, log); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// openRegister binds the transparency register's port, so that a port in
// use stops the coordinator at start rather than later. It is HTTPS with
// the coordinator's own certificate, and asks for no client certificate:
// the register is for anyone.
func (s *Service) openRegister(tlsCfg *tls.Config) (err error) {
	reg, err := register.New(register.Config{Store: s.store, Head: s.audit.Head, Log: s.log})
	if err != nil {
		return err
	}
	pub := tlsCfg.Clone()
	pub.ClientAuth, pub.ClientCAs = tls.NoClientCert, nil
	pub.NextProtos = []string{"h2", "http/1.1"}
	s.register, err = newHTTPService("register.listen", s.cfg.Register.Listen, reg, pub, s.log)
	return err
}

// openPortal binds the commissioners' portal's port. It is HTTPS with the
// coordinator's certificate and no client certificate: people sign in with
// OpenID Connect, and the portal then calls the commissioner API's service
// (commissioners) in process as them, through the same request limit as
// the gRPC server, with principals made by the same authenticator.
func (s *Service) openPortal(tlsCfg *tls.Config, commissioners *api.Server, auth *authn.Authenticator) error {
	pc := s.cfg.Portal
	secret, err := pc.OIDC.ClientSecret()
	if err != nil {
		return fmt.Errorf("portal.oidc.client_secret_file: %w", err)
	}
	key, err := pc.Session.Key()
	if err != nil {
		return fmt.Errorf("portal.session.key_file: %w", err)
	}
	lis, err := net.Listen("tcp", pc.Listen)
	if err != nil {
		return fmt.Errorf("portal.listen: %w", err)
	}
	p, err := portal.New(portal.Config{API: commissioners, Limit: api.UnaryLimit(), Releases: s.runs, Principal: auth.User,
		OIDC: portal.OIDC{Issuer: pc.OIDC.Issuer, ClientID: pc.OIDC.ClientID, ClientSecret: secret, Scopes: pc.OIDC.Scopes,
			UserClaim: pc.OIDC.Claims.User, OrgClaim: pc.OIDC.Claims.Organisation, RolesClaim: pc.OIDC.Claims.Roles,
			NameClaim: pc.OIDC.Claims.Name, SelectedRoleClaim: pc.OIDC.Claims.SelectedRole, RoleMap: pc.OIDC.RoleMap},
		BaseURL: pc.BaseURL(lis.Addr()), FlightAddress: flightAddress(pc.BaseURL(lis.Addr()), s.cfg.Listen),
		SessionKey: key, SessionMaxAge: pc.Session.MaxAge, Log: s.log})
	if err != nil {
		lis.Close()
		return err
	}
	pub := tlsCfg.Clone()
	pub.ClientAuth, pub.ClientCAs = tls.NoClientCert, nil
	pub.NextProtos = []string{"h2", "http/1.1"}
	s.portal = newHTTPServiceOn("portal.listen", lis, p, pub, s.log)
	return nil
}

// openHTTPAPI binds the commissioner API's HTTP port. It is HTTPS with the
// gRPC port's own TLS configuration, a client certificate verified against
// the network CA if one is offered, and its callers are authenticated by
// the same authenticator from that certificate or a bearer token, then
// served by the same in-process service through the same request limit.
func (s *Service) openHTTPAPI(tlsCfg *tls.Config, commissioners *api.Server, auth *authn.Authenticator) error {
	h, err := httpapi.New(httpapi.Config{API: commissioners, Limit: api.UnaryLimit(), MaxBodyBytes: api.MaxRequestBytes,
		Releases: s.runs, Authenticate: auth.AuthenticateTLS, Log: s.log})
	if err != nil {
		return err
	}
	cfg := tlsCfg.Clone()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	s.httpAPI, err = newHTTPService("http_api.listen", s.cfg.HTTPAPI.Listen, h, cfg, s.log)
	return err
}

// flightAddress is the coordinator's gRPC port on the portal's host: where
// a person who reached the portal at base reaches Flight.
func flightAddress(base, listen string) string {
	host := "localhost"
	if u, err := url.Parse(base); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	_, port, _ := net.SplitHostPort(listen)
	return net.JoinHostPort(host, port)
}

// PortalAddr is the address the portal listens on, or nil when it serves
// none.
func (s *Service) PortalAddr() net.Addr { return s.portal.addr() }

// RegisterAddr is the address the transparency register listens on, or
// nil when it serves none.
func (s *Service) RegisterAddr() net.Addr { return s.register.addr() }

// HTTPAPIAddr is the address the commissioner API's HTTP port listens
// on, or nil when it serves none.
func (s *Service) HTTPAPIAddr() net.Addr { return s.httpAPI.addr() }

// MetricsAddr is the address the Prometheus endpoint listens on, or nil
// when it serves none.
func (s *Service) MetricsAddr() net.Addr { return s.metricsHTTP.addr() }

// storeBytes is the job store's size with its write-ahead log.
func (s *Service) storeBytes() int64 {
	var n int64
	for _, p := range []string{s.cfg.StorePath(), s.cfg.StorePath() + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// connectedLinks counts the connected node links by site kind.
func (s *Service) connectedLinks() map[string]int {
	out := map[string]int{}
	for _, si := range s.links.Sites() {
		if si.Connected {
			out[string(si.Kind)]++
		}
	}
	return out
}

// interruptLeftovers marks runs an earlier process left in progress as
// interrupted, with an audit entry for each.
func (s *Service) interruptLeftovers(ctx context.Context, reason string) error {
	var ids []string
	q := store.ListQuery{PageSize: 500, States: []havenv1.RunState{havenv1.RunState_RUN_STATE_PENDING,
		havenv1.RunState_RUN_STATE_RUNNING, havenv1.RunState_RUN_STATE_LINKING}}
	for {
		runs, next, err := s.store.ListRuns(ctx, q)
		if err != nil {
			return fmt.Errorf("find unfinished runs: %w", err)
		}
		for _, r := range runs {
			ids = append(ids, r.Id)
		}
		if next == "" {
			break
		}
		q.PageToken = next
	}
	n, err := s.store.InterruptActive(ctx, reason, time.Now())
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := s.audit.Append(ctx, audit.Record{Kind: audit.KindRunState, RunID: id, Actor: "coordinator",
			Data: map[string]any{"state": "interrupted", "reason": reason}}); err != nil {
			return err
		}
	}
	if n > 0 {
		s.log.LogAttrs(ctx, slog.LevelWarn, "runs interrupted", slog.Int("runs", n), slog.String("reason", reason))
	}
	return nil
}

// Run listens on the configured address and serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		s.Close()
		return fmt.Errorf("listen: %w", err)
	}
	return s.Serve(ctx, lis)
}

// Serve serves on lis until ctx ends, then shuts down in good order and
// closes the service. It returns nil after a shutdown asked for by ctx.
func (s *Service) Serve(ctx context.Context, lis net.Listener) error {
	s.runs.Start()
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	if iv := s.cfg.Governance.ReloadInterval; iv > 0 {
		go s.policy.Watch(watchCtx, iv)
	}
	served := make(chan error, 4)
	go func() { served <- s.grpc.Serve(lis) }()
	s.health.Resume() // every service SERVING
	s.log.LogAttrs(ctx, slog.LevelInfo, "coordinator serving", slog.String("addr", lis.Addr().String()),
		slog.String("bundle_revision", s.policy.Revision()))
	for _, h := range []*httpService{s.register, s.portal, s.httpAPI, s.metricsHTTP} {
		if h == nil {
			continue
		}
		go func() {
			if err := h.srv.Serve(h.lis); !errors.Is(err, http.ErrServerClosed) {
				served <- fmt.Errorf("%s: %w", h.name, err)
			}
		}()
	}
	if s.register != nil {
		s.log.LogAttrs(ctx, slog.LevelInfo, "transparency register serving", slog.String("url", "https://"+s.register.addr().String()+"/register/"))
	}
	if s.portal != nil {
		s.log.LogAttrs(ctx, slog.LevelInfo, "portal serving", slog.String("url", s.cfg.Portal.BaseURL(s.portal.addr())+"/"),
			slog.String("oidc_issuer", s.cfg.Portal.OIDC.Issuer))
	}
	if s.httpAPI != nil {
		s.log.LogAttrs(ctx, slog.LevelInfo, "HTTP API serving", slog.String("openapi", "https://"+s.httpAPI.addr().String()+httpapi.OpenAPIPath))
	}
	if s.metricsHTTP != nil {
		s.log.LogAttrs(ctx, slog.LevelInfo, "metrics serving", slog.String("url", "http://"+s.metricsHTTP.addr().String()+"/metrics"))
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	stopWatch()
	err := s.shutdown()
	if serveErr != nil && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return errors.Join(fmt.Errorf("serve: %w", serveErr), err)
	}
	return err
}

func (s *Service) shutdown() error {
	const reason = "the coordinator is shutting down"
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	s.log.LogAttrs(ctx, slog.LevelInfo, "coordinator shutting down")
	s.health.Shutdown() // every service NOT_SERVING, so probes stop sending work
	s.runs.Shutdown(ctx, reason)
	var errs []error
	if err := s.links.Close(ctx, reason); err != nil {
		errs = append(errs, err)
	}
	for _, h := range []*httpService{s.register, s.portal, s.httpAPI, s.metricsHTTP} {
		if h != nil {
			if err := h.srv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", h.name, err))
			}
		}
	}
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.grpc.Stop()
		<-stopped
	}
	errs = append(errs, s.Close())
	return errors.Join(errs...)
}

// Close releases the store and the audit log; Serve calls it. A run still
// marked in progress is marked interrupted first, so nothing reads as
// running after the process is gone.
func (s *Service) Close() error {
	var errs []error
	for _, h := range []*httpService{s.register, s.portal, s.httpAPI, s.metricsHTTP} {
		if h != nil {
			h.lis.Close() // one that never served; Shutdown closed a served one
		}
	}
	if s.store != nil {
		if _, err := s.store.InterruptActive(context.Background(), "the coordinator shut down while the run was in progress", time.Now()); err != nil {
			errs = append(errs, err)
		}
	}
	// The log before the store: closing it anchors its final head there.
	if s.audit != nil {
		errs = append(errs, s.audit.Close())
		s.audit = nil
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
		s.store = nil
	}
	// Last: the next process may take the directory once nothing here
	// writes to it.
	errs = append(errs, s.lock.Release())
	s.lock = nil
	return errors.Join(errs...)
}

// handshakeLog is the coordinator's TLS credentials, logging each refused
// client certificate with its cause (another CA, expired), so an operator
// can tell a misissued certificate from a network fault.
type handshakeLog struct {
	credentials.TransportCredentials
	log *slog.Logger
}

// ServerHandshake implements credentials.TransportCredentials.
func (h handshakeLog) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, info, err := h.TransportCredentials.ServerHandshake(conn)
	if cause := pki.HandshakeCause(err); cause != "" {
		attrs := []slog.Attr{slog.String("remote", conn.RemoteAddr().String()), slog.String("cause", cause),
			slog.String("error", err.Error())}
		var ve *tls.CertificateVerificationError
		if errors.As(err, &ve) && len(ve.UnverifiedCertificates) > 0 {
			cert := ve.UnverifiedCertificates[0]
			attrs = append(attrs, slog.String("subject", cert.Subject.String()), slog.String("issuer", cert.Issuer.String()),
				slog.Time("not_after", cert.NotAfter))
		}
		h.log.LogAttrs(context.Background(), slog.LevelWarn, "TLS handshake refused", attrs...)
	}
	return c, info, err
}

// Clone implements credentials.TransportCredentials.
func (h handshakeLog) Clone() credentials.TransportCredentials {
	return handshakeLog{TransportCredentials: h.TransportCredentials.Clone(), log: h.log}
}

// lateHandler forwards node-link events to the dispatcher, which is built
// after the node-link server it sends through.
type lateHandler struct{ d *dispatch.Dispatcher }

func (h *lateHandler) TaskMessage(ctx context.Context, ods string, m *havenv1.NodeMessage) {
	h.d.TaskMessage(ctx, ods, m)
}

func (h *lateHandler) NodeConnected(ctx context.Context, site nodelink.SiteInfo, running []string) {
	h.d.NodeConnected(ctx, site, running)
}

func (h *lateHandler) NodeDisconnected(ctx context.Context, ods string) {
	h.d.NodeDisconnected(ctx, ods)
}

// uploads adapts the dispatcher to the Flight service.
type uploads struct{ d *dispatch.Dispatcher }

func (u uploads) OpenUpload(ctx context.Context, site, taskID string) (flightsvc.Upload, error) {
	up, err := u.d.OpenUpload(ctx, site, taskID)
	if err != nil {
		return nil, err
	}
	return up, nil
}

// prepareSpillDir makes the linkage spill directory and removes the spill
// files a coordinator that stopped mid-run left there: their runs are
// interrupted, and their pseudonyms must die with them.
func prepareSpillDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("linkage spill dir: %w", err)
	}
	left, err := filepath.Glob(filepath.Join(dir, "haven-linkage-*"))
	if err != nil {
		return fmt.Errorf("linkage spill dir: %w", err)
	}
	for _, f := range left {
		if err := os.Remove(f); err != nil {
			return fmt.Errorf("linkage spill dir: remove a file a stopped run left: %w", err)
		}
	}
	if len(left) > 0 {
		log.Warn("removed the spill files of runs a stopped coordinator left", "dir", dir, "files", len(left))
	}
	return nil
}
