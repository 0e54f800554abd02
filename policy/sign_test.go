package policy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSignedReferenceBundleVerifiesAndLoads(t *testing.T) {
	k := newKey(t)
	dir := copyDir(t, referenceBundle)
	sign(t, dir, k)
	if err := Verify(dir, k.pub); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	e := load(t, dir, k)
	if e.Revision() == "" {
		t.Error("Revision is empty; the reference manifest names one")
	}
}

// Every kind of file in a bundle is covered by the signature: a change of
// one byte in any of them is refused, and the error names the file.
func TestTamperedFileIsRefused(t *testing.T) {
	k := newKey(t)
	tests := []struct {
		name   string
		file   func(dir string) string // the file to tamper with, relative
		tamper func(t *testing.T, name string)
	}{
		{"rego policy", fixed("haven/submit/submit.rego"), flipLastLetter},
		{"rego test", fixed("haven/submit/submit_test.rego"), flipLastLetter},
		{"query definition", globbed("definitions/*/definition.yaml"), flipLastLetter},
		{"codelist", globbed("codelists/*.csv"), flipLastLetter},
		{"data value", fixed("data.json"), replaceOnce(`"min_cell_count": 8`, `"min_cell_count": 9`)},
		{"manifest revision", fixed(".manifest"), replaceOnce(`"revision": "`, `"revision": "x`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, referenceBundle)
			sign(t, dir, k)
			rel := tt.file(dir)
			tt.tamper(t, filepath.Join(dir, rel))

			err := Verify(dir, k.pub)
			if err == nil || !strings.Contains(err.Error(), rel) {
				t.Errorf("Verify after tampering with %s: got %v, want an error naming it", rel, err)
			}
			_, err = Load(context.Background(), Config{BundlePath: dir, PublicKeyPEM: k.pub, Logger: discardLogger()})
			if err == nil || !strings.Contains(err.Error(), rel) {
				t.Errorf("Load after tampering with %s: got %v, want an error naming it", rel, err)
			}
		})
	}
}

// OPA hashes JSON data and the manifest by value, so re-indenting them is
// not a change; this pins that property so that nobody relies on the
// opposite.
func TestReformattedDataIsNotTampering(t *testing.T) {
	k := newKey(t)
	dir := copyDir(t, referenceBundle)
	sign(t, dir, k)
	editJSON(t, filepath.Join(dir, "data.json"), func(map[string]any) {})
	if err := Verify(dir, k.pub); err != nil {
		t.Fatalf("Verify after re-indenting data.json: %v", err)
	}
}

func TestUnsignedOrMissingFilesAreRefused(t *testing.T) {
	k := newKey(t)
	tests := []struct {
		name   string
		change func(t *testing.T, dir string) string // returns the file the error must name
	}{
		{"added rego", func(t *testing.T, dir string) string {
			write(t, filepath.Join(dir, "haven/extra.rego"), "package haven.extra\n\nx := 1\n")
			return "haven/extra.rego"
		}},
		{"added definition", func(t *testing.T, dir string) string {
			write(t, filepath.Join(dir, "definitions/zz-unapproved/definition.yaml"), "id: zz-unapproved\n")
			return "definitions/zz-unapproved/definition.yaml"
		}},
		{"added dotfile", func(t *testing.T, dir string) string {
			write(t, filepath.Join(dir, ".notes"), "x")
			return ".notes"
		}},
		{"removed codelist", func(t *testing.T, dir string) string {
			name := firstGlob(t, filepath.Join(dir, "codelists/*.csv"))
			if err := os.Remove(name); err != nil {
				t.Fatal(err)
			}
			rel, _ := filepath.Rel(dir, name)
			return filepath.ToSlash(rel)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, referenceBundle)
			sign(t, dir, k)
			rel := tt.change(t, dir)
			if err := Verify(dir, k.pub); err == nil || !strings.Contains(err.Error(), rel) {
				t.Errorf("Verify: got %v, want an error naming %s", err, rel)
			}
		})
	}
}

func TestUnverifiableBundlesAreRefused(t *testing.T) {
	k, other := newKey(t), newKey(t)
	signed := copyDir(t, referenceBundle)
	sign(t, signed, k)
	unsigned := copyDir(t, referenceBundle)
	garbled := copyDir(t, referenceBundle)
	write(t, filepath.Join(garbled, signaturesFile), `{"signatures": ["not.a.jwt"]}`)

	tests := []struct {
		name, dir string
		cfg       Config
		want      string
	}{
		{"unsigned", unsigned, Config{PublicKeyPEM: k.pub}, signaturesFile},
		{"signed with another key", signed, Config{PublicKeyPEM: other.pub}, "signature"},
		{"garbled signature", garbled, Config{PublicKeyPEM: k.pub}, "JWT"},
		{"private key in place of public", signed, Config{PublicKeyPEM: k.priv}, "private key"},
		{"not a key", signed, Config{PublicKeyPEM: []byte("hello")}, "PEM"},
		{"wrong algorithm", signed, Config{PublicKeyPEM: k.pub, Alg: "RS256"}, "signature"},
		{"no key", signed, Config{}, "no public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.BundlePath, cfg.Logger = tt.dir, discardLogger()
			_, err := Load(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load: got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
	if err := Verify(unsigned, k.pub); err == nil {
		t.Error("Verify accepted an unsigned bundle")
	}
}

func TestInsecureSkipVerifyLoadsUnsignedDraft(t *testing.T) {
	dir := copyDir(t, referenceBundle)
	e, err := Load(context.Background(), Config{BundlePath: dir, InsecureSkipVerify: true, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision() == "" {
		t.Error("no revision")
	}
}

func TestTarballRoundTrip(t *testing.T) {
	k := newKey(t)
	dir := signedReference(t, k)
	tarball := filepath.Join(t.TempDir(), "bundle.tar.gz")
	pack(t, dir, tarball)

	if err := Verify(tarball, k.pub); err != nil {
		t.Fatalf("Verify tarball: %v", err)
	}
	fromDir, fromTar := load(t, dir, k), load(t, tarball, k)
	if fromDir.Revision() != fromTar.Revision() {
		t.Errorf("revision from directory %q, from tarball %q", fromDir.Revision(), fromTar.Revision())
	}
	in := validSubmit()
	dDir, err := fromDir.Submit(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	dTar, err := fromTar.Submit(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if !dDir.Allow || !dTar.Allow {
		t.Errorf("submit from directory allow=%v, from tarball allow=%v; want both true", dDir.Allow, dTar.Allow)
	}

	// Tamper after signing, then pack: the tarball is refused too.
	name := firstGlob(t, filepath.Join(dir, "definitions/*/definition.yaml"))
	flipLastLetter(t, name)
	pack(t, dir, tarball)
	rel, _ := filepath.Rel(dir, name)
	if err := Verify(tarball, k.pub); err == nil || !strings.Contains(err.Error(), filepath.ToSlash(rel)) {
		t.Errorf("Verify tampered tarball: got %v, want an error naming %s", err, rel)
	}
}

func TestReadTarball(t *testing.T) {
	tests := []struct {
		name    string
		entries []tar.Header
		wantErr string
		want    []string
	}{
		{"gnu tar layout", []tar.Header{
			{Name: "./", Typeflag: tar.TypeDir},
			{Name: "./haven/", Typeflag: tar.TypeDir},
			{Name: "./haven/a.rego", Typeflag: tar.TypeReg},
			{Name: "./.manifest", Typeflag: tar.TypeReg},
		}, "", []string{".manifest", "haven/a.rego"}},
		{"opa layout", []tar.Header{{Name: "/data.json", Typeflag: tar.TypeReg}}, "", []string{"data.json"}},
		{"symlink", []tar.Header{{Name: "x.rego", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}}, "links are not allowed", nil},
		{"escape", []tar.Header{{Name: "../x.rego", Typeflag: tar.TypeReg}}, "invalid path", nil},
		{"duplicate", []tar.Header{{Name: "a.rego", Typeflag: tar.TypeReg}, {Name: "./a.rego", Typeflag: tar.TypeReg}}, "twice", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			tw := tar.NewWriter(zw)
			for _, h := range tt.entries {
				body := []byte("x")
				if h.Typeflag == tar.TypeReg {
					h.Size = int64(len(body))
				}
				h.Mode = 0o644
				if err := tw.WriteHeader(&h); err != nil {
					t.Fatal(err)
				}
				if h.Typeflag == tar.TypeReg {
					tw.Write(body)
				}
			}
			tw.Close()
			zw.Close()
			f, err := readTarball(&buf)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.names(); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("files %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSymlinkInBundleDirectoryIsRefused(t *testing.T) {
	dir := copyDir(t, referenceBundle)
	if err := os.Symlink("/etc/hostname", filepath.Join(dir, "linked.csv")); err != nil {
		t.Skip("cannot make symlinks here:", err)
	}
	k := newKey(t)
	if err := Sign(dir, k.priv, "", ""); err == nil || !strings.Contains(err.Error(), "linked.csv") {
		t.Errorf("Sign: got %v, want an error naming linked.csv", err)
	}
}

// Haven's signatures are OPA's: stock `opa build` verifies a bundle that
// Haven signed and packed, and Haven verifies one that stock `opa sign`
// signed.
func TestSignatureCompatibleWithOPA(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the opa tool")
	}
	opa := opaTool(t)
	k := newKey(t)
	keys := t.TempDir()
	pub, priv := filepath.Join(keys, "pub.pem"), filepath.Join(keys, "key.pem")
	write(t, pub, string(k.pub))
	write(t, priv, string(k.priv))

	t.Run("opa build verifies haven sign", func(t *testing.T) {
		dir := copyDir(t, referenceBundle)
		sign(t, dir, k)
		tarball := filepath.Join(t.TempDir(), "bundle.tar.gz")
		pack(t, dir, tarball)
		out := filepath.Join(t.TempDir(), "out.tar.gz")
		cmd := exec.Command(opa, "build", "-b", tarball, "--verification-key", pub, "--signing-alg", "ES256", "-o", out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("opa build refused a bundle Haven signed: %v\n%s", err, b)
		}

		name := firstGlob(t, filepath.Join(dir, "codelists/*.csv"))
		flipLastLetter(t, name)
		pack(t, dir, tarball)
		cmd = exec.Command(opa, "build", "-b", tarball, "--verification-key", pub, "--signing-alg", "ES256", "-o", out)
		b, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(b), filepath.Base(name)) {
			t.Fatalf("opa build after tampering with %s: err %v, output %s", name, err, b)
		}
	})

	t.Run("haven verifies opa sign", func(t *testing.T) {
		dir := copyDir(t, referenceBundle)
		cmd := exec.Command(opa, "sign", "--signing-key", priv, "--signing-alg", "ES256", "--bundle", ".")
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("opa sign: %v\n%s", err, b)
		}
		if err := Verify(dir, k.pub); err != nil {
			t.Fatalf("Verify of an opa-signed bundle: %v", err)
		}
	})
}

// opaTool returns the path of the opa binary the module pins as a tool.
func opaTool(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not available to run `go tool opa`:", err)
	}
	out, err := exec.Command(gobin, "tool", "-n", "opa").Output()
	if err != nil {
		t.Skipf("`go tool -n opa` failed, so the opa tool cannot be run: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func pack(t testing.TB, dir, out string) {
	t.Helper()
	var buf bytes.Buffer
	if err := Pack(dir, &buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func write(t testing.TB, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fixed(rel string) func(string) string { return func(string) string { return rel } }

func globbed(pattern string) func(string) string {
	return func(dir string) string {
		m, _ := filepath.Glob(filepath.Join(dir, pattern))
		if len(m) == 0 {
			return pattern
		}
		rel, _ := filepath.Rel(dir, m[0])
		return filepath.ToSlash(rel)
	}
}

func flipLastLetter(t *testing.T, name string) { flipByte(t, name, lastLetter) }

func replaceOnce(old, new string) func(*testing.T, string) {
	return func(t *testing.T, name string) {
		t.Helper()
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(old)) {
			t.Fatalf("%s does not contain %q", name, old)
		}
		b = bytes.Replace(b, []byte(old), []byte(new), 1)
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Swapping a link to the bundle directory is how a deployment replaces a
// bundle in one step; the link itself is followed.
func TestBundleDirectoryMayBeALink(t *testing.T) {
	k := newKey(t)
	dir := signedReference(t, k)
	link := filepath.Join(t.TempDir(), "current")
	if err := os.Symlink(dir, link); err != nil {
		t.Skip("cannot make symlinks here:", err)
	}
	if err := Verify(link, k.pub); err != nil {
		t.Fatalf("Verify through a link: %v", err)
	}
	load(t, link, k)
}
