package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// queryNetwork runs a test coordinator with three practices that answer
// statins-chd, and returns the flags that reach it as user ana.
func queryNetwork(t *testing.T, opts coordinatortest.Options) (*coordinatortest.Network, []string) {
	t.Helper()
	n := coordinatortest.New(t, opts)
	codes := []string{"A81001", "A81002", "A81003"}
	ps := coordinatortest.Patients(11, codes, 150, nil)
	def, _ := n.Catalog.Get("statins-chd")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ods := range codes {
		nd := n.Node(ods, cdm.KindGP, 150)
		nd.Answer = func(_ *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
			return coordinatortest.StatinsCells(def, schema, ps, ods, 0), nil
		}
		if err := nd.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nd.Close)
	}
	cert, key := n.UserCert("ana", "QHM", "analyst")
	return n, []string{"--coordinator", n.Addr, "--ca", n.CAFile, "--cert", cert, "--key", key}
}

func query(t *testing.T, conn []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runHaven(t, append(append([]string{"query"}, args...), conn...)...)
}

func TestQueryCommands(t *testing.T) {
	n, conn := queryNetwork(t, coordinatortest.Options{})

	out, errOut, code := query(t, conn, "list")
	if code != 0 || !strings.Contains(out, "statins-chd") || !strings.Contains(out, "t2dm-emergency-admissions") || !strings.Contains(out, "linkage") {
		t.Fatalf("list: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = query(t, conn, "show", "statins-chd")
	if code != 0 || !strings.Contains(out, "lookback_days") || !strings.Contains(out, "min 28") || !strings.Contains(out, "service_evaluation") ||
		!strings.Contains(out, "approved: month starts") || !strings.Contains(out, "approved: one of 28, 90, 180, 365, 730") {
		t.Fatalf("show: exit %d\n%s%s", code, out, errOut)
	}

	out, errOut, code = query(t, conn, "submit", "statins-chd", "--param", "lookback_days=365",
		"--param", "index_date="+coordinatortest.IndexDate, "--purpose", "service_evaluation", "--wait")
	if code != 0 {
		t.Fatalf("submit --wait: exit %d\n%s%s", code, out, errOut)
	}
	runID := regexp.MustCompile(`run (run-[A-Z0-9]+)`).FindStringSubmatch(out)
	if runID == nil || !strings.Contains(out, "RELEASED") || !strings.Contains(errOut, "sites 3/3 answered") {
		t.Fatalf("submit --wait printed\n%s\nstderr:\n%s", out, errOut)
	}
	id := runID[1]

	// Refusals by the grid and the release ledger say what to do instead.
	for _, tc := range []struct{ date, want string }{
		{"2023-11-15", "parameter_off_grid: index_date 2023-11-15 is not a month start; nearest allowed: 2023-11-01, 2023-12-01"},
		{coordinatortest.IndexDate, "near_duplicate: run " + id + " (released, submitted "},
	} {
		out, errOut, code = query(t, conn, "submit", "statins-chd", "--param", "lookback_days=365",
			"--param", "index_date="+tc.date, "--purpose", "service_evaluation")
		if code == 0 || !strings.Contains(errOut, "was refused by policy:\n  "+tc.want) {
			t.Errorf("submit index_date %s: exit %d\n%s\nstderr:\n%s", tc.date, code, out, errOut)
		}
	}

	out, _, code = query(t, conn, "status", id)
	if code != 0 || !strings.Contains(out, "3 of 3 sites") || !strings.Contains(out, "A81002") || !strings.Contains(out, "done") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	out, _, code = query(t, conn, "runs")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "RELEASED") {
		t.Errorf("runs: exit %d\n%s", code, out)
	}

	out, _, code = query(t, conn, "fetch", id)
	if code != 0 || !strings.Contains(out, "(total)") || !strings.Contains(out, "withheld (") || !strings.Contains(out, "3 of 3 sites") {
		t.Errorf("fetch: exit %d\n%s", code, out)
	}
	// Every parameter, the default lookback included, heads the table.
	if !strings.Contains(out, "parameters index_date=2024-04-01 lookback_days=365\n") {
		t.Errorf("fetch does not show the run's parameters:\n%s", out)
	}
	// And the rest of the provenance: the sites' node versions, the times.
	if !strings.Contains(out, "node versions A81001=sitesim A81002=sitesim A81003=sitesim\n") ||
		!regexp.MustCompile(`definition sha256 [0-9a-f]{64}, bundle \S+, submitted 20`).MatchString(out) {
		t.Errorf("fetch does not show the provenance:\n%s", out)
	}

	out, _, code = query(t, conn, "fetch", id, "--format", "csv")
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != 0 || err != nil {
		t.Fatalf("fetch csv: exit %d, %v\n%s", code, err, out)
	}
	header := strings.Join(recs[0], ",")
	if header != "row_kind,age_band,sex,patients,patients__withheld,on_statin,on_statin__withheld,statin_issues,statin_issues__withheld" {
		t.Errorf("csv header %s", header)
	}
	withheld := 0
	for _, r := range recs[1:] {
		for i := 3; i < len(r); i += 2 {
			if (r[i] == "") == (r[i+1] == "") {
				t.Errorf("csv row %v: a value and a reason, or neither", r)
			}
			if r[i+1] != "" {
				withheld++
			}
		}
	}
	if withheld == 0 {
		t.Errorf("no withheld values in the csv:\n%s", out)
	}

	out, _, code = query(t, conn, "fetch", id, "--format", "json")
	type provenanceDoc struct {
		RunID          string            `json:"run_id"`
		BundleRevision string            `json:"bundle_revision"`
		SubmittedAt    time.Time         `json:"submitted_at"`
		ReleasedAt     time.Time         `json:"released_at"`
		Parameters     map[string]string `json:"parameters"`
		NodeVersions   map[string]string `json:"node_versions"`
		Dominance      struct{ N int }   `json:"dominance"`
	}
	var doc struct {
		provenanceDoc
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != 0 || doc.RunID != id || len(doc.Rows) != len(recs)-1 ||
		doc.Parameters["lookback_days"] != "365" {
		t.Errorf("fetch json: exit %d, %v, %d rows\n%s", code, err, len(doc.Rows), out)
	}
	if doc.BundleRevision == "" || len(doc.NodeVersions) != 3 || doc.SubmittedAt.IsZero() || doc.SubmittedAt.After(doc.ReleasedAt) || doc.Dominance.N < 1 {
		t.Errorf("fetch json provenance %+v", doc.provenanceDoc)
	}
	// CSV written to a file gets its provenance in a sidecar.
	csvFile := filepath.Join(t.TempDir(), "table.csv")
	if _, errOut, code := query(t, conn, "fetch", id, "--format", "csv", "--out", csvFile); code != 0 {
		t.Fatalf("fetch csv --out: exit %d %s", code, errOut)
	}
	var side provenanceDoc
	if b, err := os.ReadFile(csvFile + ".provenance.json"); err != nil || json.Unmarshal(b, &side) != nil ||
		side.RunID != id || side.Parameters["index_date"] != "2024-04-01" || side.BundleRevision != doc.BundleRevision || len(side.NodeVersions) != 3 {
		t.Errorf("csv sidecar: %v %+v", err, side)
	}

	file := filepath.Join(t.TempDir(), "table.arrow")
	if _, errOut, code = query(t, conn, "fetch", id, "--format", "arrow", "--out", file); code != 0 {
		t.Fatalf("fetch arrow: exit %d %s", code, errOut)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := release.ReadIPC(f)
	if err != nil || tab.Meta.RunID != id || len(tab.Rows) != len(recs)-1 {
		t.Errorf("arrow file: %v %+v", err, tab)
	}
	verifyFetched(t, n, file, id)

	// Mistakes are named.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"submit", "statins-chd", "--param", "lookback=30", "--purpose", "service_evaluation"}, `unknown parameter "lookback": statins-chd takes index_date, lookback_days`},
		{[]string{"submit", "statins-chd", "--param", "lookback_days=5", "--purpose", "service_evaluation"}, "5 is below the minimum 28"},
		{[]string{"submit", "statins-chd", "--param", "index_date=2024-13-01", "--purpose", "service_evaluation"}, "not a date"},
		{[]string{"submit", "statins-chd", "--purpose", "commissioning"}, "purpose_not_permitted"},
		{[]string{"submit", "statins-chd"}, "--purpose is required"},
		{[]string{"submit", "nope", "--purpose", "service_evaluation"}, `not found: no definition "nope"`},
		{[]string{"fetch", "run-NOSUCHRUN"}, "not found"},
		{[]string{"fetch", id, "--format", "xlsx"}, "--format"},
		{[]string{"status", "../x"}, "run id"},
	} {
		_, errOut, code := query(t, conn, tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want it to say %q", tc.args, code, errOut, tc.want)
		}
	}
	cert, key := n.UserCert("ivy", "QHM", "intern")
	_, errOut, code = runHaven(t, "query", "submit", "statins-chd", "--purpose", "service_evaluation",
		"--coordinator", n.Addr, "--ca", n.CAFile, "--cert", cert, "--key", key)
	if code == 0 || !strings.Contains(errOut, "role_not_permitted") {
		t.Errorf("a role the approval lacks: exit %d %s", code, errOut)
	}
	// Only the requester fetches the table.
	_, errOut, code = runHaven(t, "query", "fetch", id, "--coordinator", n.Addr, "--ca", n.CAFile, "--cert", cert, "--key", key)
	if code == 0 || !strings.Contains(errOut, "not permitted") {
		t.Errorf("fetching a colleague's table: exit %d %s", code, errOut)
	}
}

// The connection can come from the environment, with a bearer token.
func TestQueryTokenFromEnvironment(t *testing.T) {
	n := coordinatortest.New(t, coordinatortest.Options{Users: map[string]string{"dash": "token-for-the-dashboard"}})
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("token-for-the-dashboard\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HAVEN_COORDINATOR", n.Addr)
	t.Setenv("HAVEN_CA", n.CAFile)
	t.Setenv("HAVEN_TOKEN_FILE", tokenFile)
	out, errOut, code := runHaven(t, "query", "list")
	if code != 0 || !strings.Contains(out, "statins-chd") {
		t.Fatalf("list with a token from the environment: exit %d\n%s%s", code, out, errOut)
	}
	if err := os.WriteFile(tokenFile, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code = runHaven(t, "query", "list"); code == 0 || !strings.Contains(errOut, "not authenticated") {
		t.Errorf("a wrong token: exit %d %s", code, errOut)
	}
	t.Setenv("HAVEN_TOKEN_FILE", "")
	if _, errOut, code = runHaven(t, "query", "list"); code == 0 || !strings.Contains(errOut, "--cert and --key") {
		t.Errorf("no credentials: exit %d %s", code, errOut)
	}
}

func TestCoordinatorCommands(t *testing.T) {
	out, errOut, code := runHaven(t, "coordinator", "check", "--config", filepath.Join("..", "..", "deploy", "examples", "coordinator.yaml"))
	if code != 0 || !strings.Contains(out, "ok") {
		t.Errorf("check of the example: exit %d\n%s%s", code, out, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("listen: x\nfoo: 1\n"), 0o600)
	if _, errOut, code = runHaven(t, "coordinator", "check", "--config", bad); code == 0 || !strings.Contains(errOut, "field foo not found") {
		t.Errorf("check of a bad file: exit %d %s", code, errOut)
	}
	out, _, code = runHaven(t, "coordinator", "token", "--id", "svc", "--org", "QHM", "--role", "analyst")
	m := regexp.MustCompile(`(?s)give it to svc\):\n  (\S+)\n.*token_sha256: ([0-9a-f]{64})`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("token: exit %d\n%s", code, out)
	}

	// run: a real coordinator from a configuration file, stopped as by a
	// signal.
	n := coordinatortest.New(t, coordinatortest.Options{})
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stdout, stderr coordinatortest.SyncBuffer
	go func() {
		done <- run(ctx, []string{"coordinator", "run", "--config", n.ConfigPath, "--log-format", "json"}, &stdout, &stderr)
	}()
	giveUp := time.After(20 * time.Second) // a guard against a hang, not a timing assertion
	for !strings.Contains(stderr.String(), "coordinator serving") {
		select {
		case c := <-done:
			t.Fatalf("coordinator run exited %d:\n%s", c, stderr.String())
		case <-giveUp:
			cancel()
			t.Fatalf("coordinator run did not start serving:\n%s", stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if c := <-done; c != 0 {
		t.Errorf("coordinator run exited %d after a signal:\n%s", c, stderr.String())
	}
}

// verifyFetched checks a table fetched from the real coordinator with
// haven query verify: it verifies against the coordinator's key, and is
// refused after one byte of its provenance or one bit of a count is
// flipped, or against another key.
func verifyFetched(t *testing.T, n *coordinatortest.Network, file, runID string) {
	t.Helper()
	out, errOut, code := runHaven(t, "query", "verify", "--public-key", n.ReleasePublicKey, file)
	if code != 0 || !strings.Contains(out, "signature good") || !strings.Contains(out, "run "+runID+": statins-chd") ||
		!strings.Contains(out, "purpose service_evaluation") {
		t.Fatalf("verify of the fetched table: exit %d\n%s%s", code, out, errOut)
	}
	// --key is the TLS private key of every query command, not the
	// release key: given alone, verify asks for --public-key.
	if _, errOut, code := runHaven(t, "query", "verify", "--key", n.ReleasePublicKey, file); code == 0 || !strings.Contains(errOut, "--public-key: required") {
		t.Errorf("verify with --key only: exit %d, %s", code, errOut)
	}
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Another key, made as an operator would.
	if out, errOut, code := runHaven(t, "pki", "signing-key", "--dir", dir); code != 0 {
		t.Fatalf("pki signing-key: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := runHaven(t, "pki", "signing-key", "--dir", dir); code == 0 || !strings.Contains(errOut, "already exists") {
		t.Errorf("pki signing-key over an existing key: exit %d %s", code, errOut)
	}
	// The total row's count, as a little-endian int64, sits in the
	// stream's body; the byte is found from the verified table, not
	// guessed.
	tab, err := release.Verify(good, mustPub(t, n.ReleasePublicKey))
	if err != nil {
		t.Fatal(err)
	}
	total := int64(tab.Rows[len(tab.Rows)-1].Values[0].Value)
	le := make([]byte, 8)
	binary.LittleEndian.PutUint64(le, uint64(total))
	flip := func(at int) []byte {
		b := bytes.Clone(good)
		b[at] ^= 0x01
		return b
	}
	purposeAt := bytes.Index(good, []byte("service_evaluation"))
	countAt := bytes.LastIndex(good, le)
	if purposeAt < 0 || countAt < 0 || total < 2 {
		t.Fatalf("purpose at %d, total %d at %d", purposeAt, total, countAt)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		key  string
		want string
	}{
		{"purpose byte flipped", flip(purposeAt), n.ReleasePublicKey, "provenance"},
		{"total count bit flipped", flip(countAt), n.ReleasePublicKey, "rows differ"},
		{"another key", good, filepath.Join(dir, "release-signing.pub"), "not by the given key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "t.arrow")
			if err := os.WriteFile(path, tc.b, 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := runHaven(t, "query", "verify", "--public-key", tc.key, path)
			if code == 0 || !strings.Contains(errOut, "REFUSED") || !strings.Contains(errOut, tc.want) || strings.Contains(out, "signature good") {
				t.Errorf("exit %d, want a refusal naming %q\n%s%s", code, tc.want, out, errOut)
			}
		})
	}
}

func mustPub(t *testing.T, path string) ed25519.PublicKey {
	t.Helper()
	k, err := release.LoadPublicKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
