package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/havenhealth/haven/policy"
)

const referenceBundle = "../../policy/bundle"

func havenCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

// copyBundle copies the reference bundle, without any signature, into a
// temporary directory.
func copyBundle(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "bundle")
	if err := policy.CopyUnsigned(referenceBundle, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestPolicyKeygenSignVerify(t *testing.T) {
	keys := t.TempDir()
	priv, pub := filepath.Join(keys, "board.pem"), filepath.Join(keys, "board.pub.pem")
	out, errOut, code := havenCLI(t, "policy", "keygen", "--out", priv)
	if code != 0 || !strings.Contains(out, pub) {
		t.Fatalf("keygen: exit %d, %s %s", code, out, errOut)
	}
	fi, err := os.Stat(priv)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v (err %v), want 0600", fi.Mode().Perm(), err)
	}
	if _, errOut, code := havenCLI(t, "policy", "keygen", "--out", priv); code != 1 || !strings.Contains(errOut, "exists") {
		t.Errorf("keygen over an existing key: exit %d, %s; want refused", code, errOut)
	}

	dir := copyBundle(t)
	tarball := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if out, errOut, code := havenCLI(t, "policy", "sign", dir, "--key", priv, "--key-id", "board-2026", "--out", tarball); code != 0 {
		t.Fatalf("sign: exit %d, %s %s", code, out, errOut)
	}
	for _, p := range []string{dir, tarball} {
		if out, errOut, code := havenCLI(t, "policy", "verify", p, "--key", pub); code != 0 || !strings.Contains(out, "verified") {
			t.Errorf("verify %s: exit %d, %s %s", p, code, out, errOut)
		}
	}

	// Any byte of any file: here a codelist.
	lists, _ := filepath.Glob(filepath.Join(dir, "codelists", "*.csv"))
	if len(lists) == 0 {
		t.Fatal("the reference bundle has no codelists")
	}
	b, _ := os.ReadFile(lists[0])
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(lists[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = havenCLI(t, "policy", "verify", dir, "--key", pub)
	if code != 1 || !strings.Contains(errOut, "codelists/"+filepath.Base(lists[0])) {
		t.Errorf("verify after tampering: exit %d, %s; want exit 1 naming the file", code, errOut)
	}

	// The stock OPA tool accepts what `haven policy sign` wrote.
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not available to run `go tool opa build`:", err)
	}
	opa, err := exec.Command(gobin, "tool", "-n", "opa").Output()
	if err != nil {
		t.Skipf("`go tool -n opa` failed, so opa build cannot be run: %v", err)
	}
	cmd := exec.Command(strings.TrimSpace(string(opa)), "build", "-b", tarball,
		"--verification-key", pub, "--signing-alg", "ES256", "-o", filepath.Join(t.TempDir(), "out.tar.gz"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("opa build refused the bundle haven signed: %v\n%s", err, b)
	}
}

func TestPolicyLint(t *testing.T) {
	if out, errOut, code := havenCLI(t, "policy", "lint", referenceBundle, filepath.Join(referenceBundle, "definitions", "t2dm-prevalence", "definition.yaml")); code != 0 {
		t.Fatalf("lint of the reference bundle: exit %d\n%s%s", code, out, errOut)
	}

	dir := copyBundle(t)
	def := filepath.Join(dir, "definitions", "t2dm-prevalence", "definition.yaml")
	f, err := os.OpenFile(def, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("colour: blue\n")
	f.Close()
	if err := os.WriteFile(filepath.Join(dir, "haven", "broken.rego"), []byte("package haven.broken\n\nx := if\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := havenCLI(t, "policy", "lint", dir)
	if code != 1 || !strings.Contains(errOut, "problems") {
		t.Errorf("lint of a broken bundle: exit %d, stderr %q; want exit 1", code, errOut)
	}
	for _, want := range []string{"haven/broken.rego:3:6:", "definitions/t2dm-prevalence/definition.yaml:", `unknown field "colour"`} {
		if !strings.Contains(out, want) {
			t.Errorf("lint output lacks %q:\n%s", want, out)
		}
	}
	if out, _, code := havenCLI(t, "policy", "lint", def); code != 1 || !strings.Contains(out, "colour") {
		t.Errorf("lint of the broken definition alone: exit %d\n%s", code, out)
	}
}

func TestPolicyHash(t *testing.T) {
	name := filepath.Join(referenceBundle, "definitions", "t2dm-emergency-admissions", "definition.yaml")
	d, err := policy.DefinitionFile(name)
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := havenCLI(t, "policy", "hash", name)
	if code != 0 || out != d.Hash()+"  t2dm-emergency-admissions\n" {
		t.Errorf("hash: exit %d, %q %q; want %s", code, out, errOut, d.Hash())
	}
	if _, _, code := havenCLI(t, "policy", "hash", filepath.Join(t.TempDir(), "missing.yaml")); code != 1 {
		t.Errorf("hash of a missing file: exit %d", code)
	}
}

func TestPolicyTest(t *testing.T) {
	out, errOut, code := havenCLI(t, "policy", "test", referenceBundle)
	if code != 0 || !strings.Contains(out, "rego: PASS") || !strings.Contains(out, "lint: ok") {
		t.Fatalf("test of the reference bundle: exit %d\n%s%s", code, out, errOut)
	}

	dir := copyBundle(t)
	// A policy that forgets to check the purpose: its test must fail.
	name := filepath.Join(dir, "haven", "submit", "submit.rego")
	b, _ := os.ReadFile(name)
	b = bytes.Replace(b, []byte("\tnot purpose_permitted\n"), []byte("\tfalse\n"), 1)
	b = bytes.Replace(b, []byte("\tinput.purpose in approval.purposes\n"), []byte(""), 1)
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code = havenCLI(t, "policy", "test", dir)
	if code != 1 || !strings.Contains(out, "FAIL") || !strings.Contains(out, "test_deny_purpose") {
		t.Errorf("test of a broken policy: exit %d\n%s", code, out)
	}
}

func TestPolicyEval(t *testing.T) {
	d, err := policy.DefinitionFile(filepath.Join(referenceBundle, "definitions", "t2dm-emergency-admissions", "definition.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	input := func(purpose string) string {
		b, _ := json.Marshal(map[string]any{
			"now":        "2026-06-01T09:00:00Z",
			"requester":  map[string]any{"id": "ana", "org": "QHM", "roles": []string{"commissioner"}},
			"definition": map[string]any{"id": d.ID, "hash": d.Hash()},
			"parameters": map[string]any{"index_date": "2023-04-01", "followup_days": 365},
			"purpose":    purpose,
			"counts":     map[string]any{"runs_last_24h": 0, "refused_last_24h": 0, "active_runs": 0, "org_active_runs": 0},
			"ledger":     map[string]any{"since": "2025-06-01T00:00:00Z", "near": []any{}, "runs": map[string]any{"requester": 0, "organisation": 0}},
		})
		name := filepath.Join(t.TempDir(), "input.json")
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return name
	}
	allowed, refused := input("commissioning"), input("public_health")

	out, errOut, code := havenCLI(t, "--log-format", "json", "policy", "eval", "submit", "--input", allowed, "--bundle", referenceBundle, "--insecure-unsigned")
	if code != 0 || !strings.HasPrefix(out, "allow\n") {
		t.Errorf("eval allowed: exit %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(errOut, "ana") || !strings.Contains(errOut, `"input_sha256"`) {
		t.Errorf("decision log should hold the input's digest and not the input:\n%s", errOut)
	}
	out, errOut, code = havenCLI(t, "policy", "eval", "submit", "--input", refused, "--bundle", referenceBundle, "--insecure-unsigned")
	if code != 0 || !strings.HasPrefix(out, "deny\n") || !strings.Contains(out, "purpose_not_permitted") {
		t.Errorf("eval refused: exit %d\n%s%s", code, out, errOut)
	}

	// Signed, with --key and --json.
	dir := copyBundle(t)
	keys := t.TempDir()
	priv, pub := filepath.Join(keys, "k.pem"), filepath.Join(keys, "k.pub.pem")
	havenCLI(t, "policy", "keygen", "--out", priv)
	havenCLI(t, "policy", "sign", dir, "--key", priv)
	out, errOut, code = havenCLI(t, "policy", "eval", "haven/submit", "--input", allowed, "--bundle", dir, "--key", pub, "--json")
	var got policy.Decision
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || !got.Allow || got.ID == "" || got.Revision == "" {
		t.Errorf("eval --json: exit %d, %+v (%v)\n%s%s", code, got, err, out, errOut)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"policy", "eval", "submit", "--input", allowed, "--bundle", dir}, "--insecure-unsigned"},
		{[]string{"policy", "eval", "everything", "--input", allowed, "--bundle", dir, "--key", pub}, "unknown decision"},
		{[]string{"policy", "eval", "submit", "--input", allowed, "--bundle", copyBundle(t), "--key", pub}, ".signatures.json"},
	} {
		if _, errOut, code := havenCLI(t, tc.args...); code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("haven %s: exit %d, %s; want exit 1 mentioning %q", strings.Join(tc.args, " "), code, errOut, tc.want)
		}
	}
}

// TestPolicyPTable generates the reference table and checks that it is the
// one in the bundle, that the summary shows what a board needs (small
// counts released as 0 or 10, the error by cell size), and that a bad
// table is refused naming its row.
func TestPolicyPTable(t *testing.T) {
	out := filepath.Join(t.TempDir(), "ptable.csv")
	stdout, stderr, code := havenCLI(t, "policy", "ptable", "--threshold", "8", "--base", "5",
		"--max-perturbation", "10", "--variance", "9", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"     7  0 (0.309) 10 (0.676) 15 (0.016)", "expected absolute error by cell size", "wrote " + out} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := os.ReadFile(filepath.Join(referenceBundle, "disclosure", "ptable-8-5.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ref) {
		t.Errorf("the reference bundle's table is not what these parameters generate")
	}
	if _, stderr, code = havenCLI(t, "policy", "ptable", "--table", out, "--threshold", "8", "--base", "10"); code == 0 || !strings.Contains(stderr, "not a multiple of the rounding base 10") {
		t.Errorf("describing with base 10: exit %d, %s", code, stderr)
	}
	if _, stderr, code = havenCLI(t, "policy", "ptable", "--max-perturbation", "5"); code == 0 || !strings.Contains(stderr, "max perturbation 5 must be at least 10") {
		t.Errorf("generating with max perturbation 5: exit %d, %s", code, stderr)
	}
}
