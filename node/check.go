package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/node/config"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/optout"
	"github.com/havenhealth/haven/node/sqlgen"
	"github.com/havenhealth/haven/policy"
)

// Finding is one line of a check report.
type Finding struct {
	// Check names what was checked, e.g. "governance bundle".
	Check string
	// OK is false for a problem that stops the node working.
	OK bool
	// Warn marks an OK finding that needs attention soon, e.g. a
	// certificate close to expiry.
	Warn bool
	// Detail says what was found, for people. It never holds patient data.
	Detail string
}

// CertWarning is how close to expiry a certificate must be for Check to
// warn.
const CertWarning = 30 * 24 * time.Hour

// Check examines everything a node depends on and reports each finding,
// for `haven node check`: the configuration's files, the certificate and
// its expiry, the linkage secret, the opt-out lists (national, and the
// network type 1 list's size and age), the bundle's signature,
// the connector plugin (checksum, start, the CDM tables with row counts,
// invalid NHS numbers in each), the state and audit directories, and
// whether the coordinator answers a TLS handshake. It starts no daemon and
// changes nothing but the directories it creates.
func Check(ctx context.Context, cfg *config.Config, logger *slog.Logger) []Finding {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var out []Finding
	add := func(check string, err error, okDetail string) bool {
		if err != nil {
			out = append(out, Finding{Check: check, Detail: err.Error()})
			return false
		}
		out = append(out, Finding{Check: check, OK: true, Detail: okDetail})
		return true
	}

	// Certificate.
	if cert, err := pki.ReadCert(cfg.TLS.Cert); err != nil {
		add("node certificate", err, "")
	} else if err := cfg.CheckCertificate(); err != nil {
		add("node certificate", err, "")
	} else {
		left := time.Until(cert.NotAfter)
		f := Finding{Check: "node certificate", OK: true,
			Detail: fmt.Sprintf("names site %s; expires %s (%d days)", cfg.Site.ODS, cert.NotAfter.Format(time.DateOnly), int(left.Hours()/24))}
		if left < CertWarning {
			f.Warn = true
			f.Detail += "; ask the network operator for a new one"
		}
		out = append(out, f)
	}
	_, err := pki.CertPool(cfg.TLS.CA)
	add("network CA", err, cfg.TLS.CA)

	// Linkage secret: never printed, only its fitness.
	_, err = cfg.ReadSecret()
	add("linkage secret", err, fmt.Sprintf("readable by its owner only, long enough (key id %s)", cfg.Linkage.KeyID))

	// Opt-out list.
	if s, invalid, err := optout.ReadNDOPFile(cfg.OptOut.NDOPFile); add("national opt-out list", err, "") {
		out[len(out)-1].Detail = fmt.Sprintf("%d patients", s.Len())
		if invalid > 0 {
			out[len(out)-1].Warn = true
			out[len(out)-1].Detail += fmt.Sprintf("; %d entries are not valid NHS numbers and are ignored", invalid)
		}
	}

	// Network type 1 list: what the coordinator last relayed, and when.
	out = append(out, checkNetworkList(cfg.StateDir, time.Now()))

	// Bundle.
	if pub, err := os.ReadFile(cfg.Governance.PublicKey); !add("board public key", err, cfg.Governance.PublicKey) {
		out = append(out, Finding{Check: "governance bundle", Detail: "cannot be verified without the board's public key"})
	} else {
		e, err := policy.Load(ctx, policy.Config{BundlePath: cfg.Governance.Bundle, PublicKeyPEM: pub, SiteModules: cfg.Governance.SiteModules, Logger: logger})
		if add("governance bundle", err, "") {
			out[len(out)-1].Detail = fmt.Sprintf("signature valid; revision %s; %d approved definitions; %d site modules",
				e.Revision(), len(e.Catalog().Definitions()), len(cfg.Governance.SiteModules))
		}
	}

	// Directories.
	for _, d := range []struct{ name, dir string }{{"state directory", cfg.StateDir}, {"audit directory", cfg.AuditDir}} {
		add(d.name, writable(d.dir), d.dir)
	}

	// Connector.
	out = append(out, checkConnector(ctx, cfg, logger)...)

	// Coordinator.
	add("coordinator", dialCoordinator(ctx, cfg), fmt.Sprintf("%s answered a TLS handshake with a certificate from the network CA", cfg.Coordinator.Address))
	return out
}

// NetworkListStale is the age past which check warns about the network
// type 1 opt-out list: a connected node hears from the coordinator on
// every registration and every change.
const NetworkListStale = 24 * time.Hour

// checkNetworkList reports the size and age of the network type 1 opt-out
// list kept in the state directory.
func checkNetworkList(stateDir string, now time.Time) Finding {
	const name = "network type 1 opt-out list"
	n, err := optout.ReadNetworkFile(stateDir)
	if err != nil {
		return Finding{Check: name, Detail: err.Error()}
	}
	if n == nil {
		return Finding{Check: name, OK: true, Warn: true,
			Detail: "not received yet: the node runs no task until the coordinator has sent it (on registering)"}
	}
	age := now.Sub(n.Received()).Round(time.Second)
	f := Finding{Check: name, OK: true, Detail: fmt.Sprintf("%d patients from %d practices; version %s; received %s (%s ago)",
		n.Len(), n.Publishers(), n.Version(), n.Received().Format(time.DateTime), age)}
	if age > NetworkListStale {
		f.Warn = true
		f.Detail += "; the node has not heard from the coordinator since: is it connected?"
	}
	return f
}

func writable(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".check-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

func checkConnector(ctx context.Context, cfg *config.Config, logger *slog.Logger) []Finding {
	var out []Finding
	sum, err := connector.FileSHA256(cfg.Connector.Path)
	switch {
	case err != nil:
		return append(out, Finding{Check: "connector plugin", Detail: err.Error()})
	case sum != cfg.Connector.SHA256:
		return append(out, Finding{Check: "connector plugin", Detail: fmt.Sprintf("%s has sha256 %s, the configuration says %s; it will not be started", cfg.Connector.Path, sum, cfg.Connector.SHA256)})
	}
	h, err := connector.Launch(ctx, connector.LaunchConfig{
		Path: cfg.Connector.Path, SHA256: cfg.Connector.SHA256, Args: cfg.Connector.Args, Env: envList(cfg.Connector.Env),
		Logger: logger, StartTimeout: cfg.Connector.StartTimeout.Std(), QueryTimeout: cfg.Limits.QueryTimeout.Std(),
	})
	if err != nil {
		return append(out, Finding{Check: "connector plugin", Detail: err.Error()})
	}
	defer h.Close()
	d, err := h.Describe(ctx)
	if err != nil {
		return append(out, Finding{Check: "connector plugin", Detail: err.Error()})
	}
	// The connector has validated the dialect, so sqlgen knows it.
	dialect, err := sqlgen.ParseDialect(string(d.Dialect))
	if err != nil {
		return append(out, Finding{Check: "connector plugin", Detail: err.Error()})
	}
	out = append(out, Finding{Check: "connector plugin", OK: true,
		Detail: fmt.Sprintf("%s: checksum matches, started; dialect %s, version %s", filepath.Base(cfg.Connector.Path), d.Dialect, d.PluginVersion)})
	for _, t := range cdm.TablesFor(cfg.Site.Kind) {
		name := "CDM table " + t.Name
		ti, ok := d.Table(t.Name)
		if !ok {
			out = append(out, Finding{Check: name, Detail: fmt.Sprintf("missing: a %s site must expose it", cfg.Site.Kind)})
			continue
		}
		invalid, err := countInvalid(ctx, h, dialect, t.Name, cfg.Limits.MaxRows)
		if err != nil {
			out = append(out, Finding{Check: name, Detail: fmt.Sprintf("%d rows; reading its NHS numbers failed: %v", ti.Rows, err)})
			continue
		}
		f := Finding{Check: name, OK: true, Detail: fmt.Sprintf("%d rows", ti.Rows)}
		if invalid > 0 {
			f.Warn = true
			f.Detail += fmt.Sprintf("; %d with an invalid NHS number, which every query leaves out", invalid)
		}
		bad, err := countBadValues(ctx, h, dialect, t, cfg.Limits.MaxRows)
		if err != nil {
			f = Finding{Check: name, Detail: fmt.Sprintf("%d rows; reading its numeric values failed: %v", ti.Rows, err)}
		} else if bad > 0 {
			f.Warn = true
			f.Detail += fmt.Sprintf("; %d with a numeric value that is not finite or is impossible for its code (cdm.ValidValue), which every query leaves out", bad)
		}
		out = append(out, f)
	}
	return out
}

// runStatement runs a sqlgen statement in the connector.
func runStatement(ctx context.Context, h *connector.Host, st sqlgen.Statement, maxRows int64) (*connector.Result, error) {
	args, err := connector.ValuesOf(st.Args)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", st.Name, err)
	}
	return h.Query(ctx, connector.Query{SQL: st.SQL, Args: args, MaxRows: maxRows})
}

// countInvalid counts the rows of a CDM table whose NHS number fails the
// modulus-11 check, testing each in Go.
func countInvalid(ctx context.Context, h *connector.Host, d sqlgen.Dialect, table string, maxRows int64) (int64, error) {
	st, err := sqlgen.TableNHSNumbers(d, table)
	if err != nil {
		return 0, err
	}
	res, err := runStatement(ctx, h, st, maxRows)
	if err != nil {
		return 0, err
	}
	defer res.Close()
	var n int64
	for res.Next() {
		col, ok := res.Record().Column(0).(*array.String)
		if !ok {
			return 0, fmt.Errorf("%s.%s is %s, want utf8", table, cdm.ColNHSNumber, res.Record().Column(0).DataType())
		}
		for i := range col.Len() {
			if col.IsNull(i) || !cdm.ValidNHSNumber(col.Value(i)) {
				n++
			}
		}
	}
	return n, res.Err()
}

// countBadValues counts the rows of a CDM table holding a numeric value
// cdm.ValidValue rejects: NaN, ±Inf, or outside its code's range. NULL is
// no reading.
func countBadValues(ctx context.Context, h *connector.Host, d sqlgen.Dialect, t cdm.Table, maxRows int64) (int64, error) {
	var n int64
	for _, col := range cdm.NumericColumns(t.Name) {
		codeCol, _, _ := cdm.CodeColumn(t.Name, col)
		st, err := sqlgen.NumericValues(d, t.Name, col)
		if err != nil {
			return 0, err
		}
		res, err := runStatement(ctx, h, st, maxRows)
		if err != nil {
			return 0, err
		}
		for res.Next() {
			rec := res.Record()
			vals, ok := rec.Column(0).(*array.Float64)
			if !ok {
				res.Close()
				return 0, fmt.Errorf("%s.%s is %s, want float64", t.Name, col, rec.Column(0).DataType())
			}
			var codes *array.String
			if codeCol != "" {
				if codes, ok = rec.Column(1).(*array.String); !ok {
					res.Close()
					return 0, fmt.Errorf("%s.%s is %s, want utf8", t.Name, codeCol, rec.Column(1).DataType())
				}
			}
			for i := range vals.Len() {
				code := ""
				if codes != nil && codes.IsValid(i) {
					code = codes.Value(i)
				}
				if vals.IsValid(i) && !cdm.ValidValue(t.Name, col, code, vals.Value(i)) {
					n++
				}
			}
		}
		err = res.Err()
		res.Close()
		if err != nil {
			return 0, err
		}
	}
	return n, nil
}

// dialCoordinator makes a TLS handshake with the coordinator as the node
// would, and hangs up.
func dialCoordinator(ctx context.Context, cfg *config.Config) error {
	tc, err := pki.ClientTLS(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.CA, cfg.Coordinator.ServerName)
	if err != nil {
		return err
	}
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(cfg.Coordinator.Address)
		if err != nil {
			return err
		}
		tc.ServerName = host
	}
	tc.NextProtos = []string{"h2"}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: tc}
	conn, err := d.DialContext(ctx, "tcp", cfg.Coordinator.Address)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Coordinator.Address, err)
	}
	return conn.Close()
}
