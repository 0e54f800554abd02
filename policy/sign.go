package policy

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"
	"github.com/open-policy-agent/opa/v1/util"
)

// boardKeyID names the one verification key Haven configures. Setting it
// on the verification config makes OPA use that key whatever key id the
// signer put in the token, so the id a board chose when signing is a label
// only: the key itself decides.
const boardKeyID = "haven-board"

// Sign signs every file of the bundle directory dir with the governance
// board's private key (PEM: PKCS #8, SEC 1 EC or PKCS #1 RSA) and writes
// dir/.signatures.json in OPA's bundle-signing format. File names in the
// signature are relative to dir, as in an OPA bundle file, so the signature
// holds wherever the directory is copied; `opa sign --bundle .` run inside
// dir gives the same names.
//
// alg is a JWS algorithm such as ES256 or RS256; empty means the one that
// goes with the key. keyID is recorded in the token as its "kid" and is
// informational: verification trusts the configured key, not the id.
//
// Before it returns, Sign verifies the new signature with the public half
// of the key, so a bundle it signed is one Load accepts.
func Sign(dir string, privateKeyPEM []byte, alg, keyID string) error {
	priv, err := parsePrivateKey(privateKeyPEM)
	if err != nil {
		return fmt.Errorf("sign %s: %w", dir, err)
	}
	if alg == "" {
		if alg, err = algorithmFor(priv.Public()); err != nil {
			return fmt.Errorf("sign %s: %w", dir, err)
		}
	}
	f, err := readDir(dir)
	if err != nil {
		return fmt.Errorf("sign %s: %w", dir, err)
	}
	delete(f, signaturesFile)
	token, err := signFiles(f, privateKeyPEM, alg, keyID)
	if err != nil {
		return fmt.Errorf("sign %s: %w", dir, err)
	}
	sig, err := json.MarshalIndent(map[string][]string{"signatures": {token}}, "", "  ")
	if err != nil {
		return fmt.Errorf("sign %s: %w", dir, err)
	}
	sig = append(sig, '\n')

	// Check the signature before it replaces a good one.
	pubPEM, err := publicKeyPEM(priv.Public())
	if err != nil {
		return fmt.Errorf("sign %s: %w", dir, err)
	}
	f[signaturesFile] = sig
	vc, err := verificationConfig(pubPEM, alg)
	if err != nil {
		return fmt.Errorf("sign %s: %w", dir, err)
	}
	if _, err := readVerified(f, vc); err != nil {
		return fmt.Errorf("sign %s: the new signature does not verify: %w", dir, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, signaturesFile), sig, 0o644); err != nil {
		return fmt.Errorf("sign %s: %w", dir, err)
	}
	return nil
}

// signFiles hashes each file the way OPA's verifier does and returns the
// signed token.
func signFiles(f files, privateKeyPEM []byte, alg, keyID string) (string, error) {
	hasher, err := bundle.NewSignatureHasher(bundle.SHA256)
	if err != nil {
		return "", err
	}
	infos := make([]bundle.FileInfo, 0, len(f))
	for _, name := range f.names() {
		if path.Base(name) == signaturesFile {
			return "", fmt.Errorf("%s: a signatures file may only sit at the bundle root", name)
		}
		// OPA hashes JSON and YAML data files and the manifest by their
		// parsed value, so that formatting does not count; every other
		// file by its bytes.
		var v any = f[name]
		if bundle.IsStructuredDoc(name) {
			if err := util.Unmarshal(f[name], &v); err != nil {
				return "", fmt.Errorf("parse %s: %w", name, err)
			}
		}
		sum, err := hasher.HashFile(v)
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", name, err)
		}
		infos = append(infos, bundle.NewFile(name, hex.EncodeToString(sum), string(bundle.SHA256)))
	}
	sc := bundle.NewSigningConfig(string(privateKeyPEM), alg, "")
	token, err := bundle.GenerateSignedToken(infos, sc, keyID)
	if err != nil {
		return "", fmt.Errorf("sign with %s: %w", alg, err)
	}
	return token, nil
}

// Verify checks the bundle at p, a directory or a .tar.gz file, against
// the board's public key (PEM). It returns nil only if the bundle carries a
// signature made with that key and every file in the bundle is listed in the
// signature with a matching digest, and no listed file is missing; the
// error names the first file that does not match.
func Verify(p string, publicKeyPEM []byte) error {
	vc, err := verificationConfig(publicKeyPEM, "")
	if err != nil {
		return fmt.Errorf("verify %s: %w", p, err)
	}
	f, err := readBundle(p)
	if err != nil {
		return fmt.Errorf("verify %s: %w", p, err)
	}
	if _, err := readVerified(f, vc); err != nil {
		return fmt.Errorf("verify %s: %w", p, err)
	}
	return nil
}

// Pack writes the bundle directory dir to w as a .tar.gz with paths
// relative to the bundle root, the layout of an OPA bundle file: `opa build
// -b FILE --verification-key KEY` accepts a bundle signed by Sign and packed
// by Pack, and Load reads it.
func Pack(dir string, w io.Writer) error {
	f, err := readDir(dir)
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := f.writeTarball(w); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	return nil
}

// readVerified parses the files with OPA's bundle reader, which checks the
// signature and every file's digest as it reads. A nil vc skips
// verification, for drafting only.
func readVerified(f files, vc *bundle.VerificationConfig) (bundle.Bundle, error) {
	r := bundle.NewCustomReader(newLoader(f)).
		WithRegoVersion(ast.RegoV1).
		WithSizeLimitBytes(maxBundleBytes)
	if vc == nil {
		r = r.WithSkipBundleVerification(true)
	} else {
		r = r.WithBundleVerificationConfig(vc)
	}
	return r.Read()
}

// verificationConfig trusts exactly one key. alg empty means the algorithm
// that goes with the key.
func verificationConfig(publicKeyPEM []byte, alg string) (*bundle.VerificationConfig, error) {
	pub, err := parsePublicKey(publicKeyPEM)
	if err != nil {
		return nil, err
	}
	if alg == "" {
		if alg, err = algorithmFor(pub); err != nil {
			return nil, err
		}
	}
	kc := map[string]*keys.Config{boardKeyID: {Key: string(publicKeyPEM), Algorithm: alg}}
	return bundle.NewVerificationConfig(kc, boardKeyID, "", nil), nil
}

// GenerateKey returns a new ECDSA P-256 key pair for signing bundles with
// ES256, PEM-encoded: the private key as PKCS #8, the public key as PKIX.
func GenerateKey() (privatePEM, publicPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	pub, err := publicKeyPEM(k.Public())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), pub, nil
}

// PublicKeyPEM returns the PEM public key (PKIX) of a PEM private key, for
// handing to nodes after signing.
func PublicKeyPEM(privateKeyPEM []byte) ([]byte, error) {
	priv, err := parsePrivateKey(privateKeyPEM)
	if err != nil {
		return nil, err
	}
	return publicKeyPEM(priv.Public())
}

func publicKeyPEM(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// algorithmFor returns the usual JWS algorithm for a public key.
func algorithmFor(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ES256", nil
		case elliptic.P384():
			return "ES384", nil
		case elliptic.P521():
			return "ES512", nil
		}
		return "", fmt.Errorf("ECDSA curve %s is not supported", k.Curve.Params().Name)
	case *rsa.PublicKey:
		return "RS256", nil
	case ed25519.PublicKey:
		return "EdDSA", nil
	}
	return "", fmt.Errorf("key type %T is not supported", pub)
}

func parsePrivateKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("private key is not PEM")
	}
	var k any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key type %T cannot sign", k)
	}
	return s, nil
}

// parsePublicKey accepts the PEM forms OPA's verifier accepts for a public
// key. A private key is refused: nodes must never hold the board's.
func parsePublicKey(b []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("public key is not PEM")
	}
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse public key: %w", err)
		}
		return k, nil
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse public key: %w", err)
		}
		return k, nil
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		return c.PublicKey, nil
	}
	if bytes.Contains([]byte(block.Type), []byte("PRIVATE")) {
		return nil, errors.New("a private key was given where the public key belongs")
	}
	return nil, fmt.Errorf("PEM block %q is not a public key", block.Type)
}

// writeFileAtomic replaces name with data in one rename, so that a reader
// (or a bundle watcher) never sees half a file.
func writeFileAtomic(name string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}

// CopyUnsigned copies the bundle directory src into dst, every file but its
// signatures: the first step of an edit to a signed bundle, which Sign then
// signs again. Links and other irregular files are left out, as loading
// refuses them.
func CopyUnsigned(src, dst string) error {
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if rel == signaturesFile || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		return fmt.Errorf("copy bundle %s: %w", src, err)
	}
	return nil
}
