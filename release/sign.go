package release

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"

	"github.com/havenhealth/haven/internal/arrowsafe"
)

// Signature metadata keys. The coordinator signs the message
//
//	"haven release v1\n" + <provenance sha256 hex> + "\n" + <rows sha256 hex>
//
// with ed25519. The provenance digest covers every other schema metadata
// key and its value (the run, definition, parameters, disclosure rules,
// coverage, column names and kinds); the rows digest covers every row's
// kind, keys (null distinct from empty) and values or reasons. Both are
// computed from the decoded table, not from the IPC framing, because
// Flight DoGet re-chunks the stored stream; the two digests are stored
// beside the signature so a verifier can say which part was altered.
const (
	keySignature      = "haven.signature.ed25519"
	keySignatureKeyID = "haven.signature.key_id"
	keyProvenanceHash = "haven.signature.provenance_sha256"
	keyRowsHash       = "haven.signature.rows_sha256"
)

const signedPrefix = "haven release v1\n"

func isSignatureKey(k string) bool { return strings.HasPrefix(k, "haven.signature.") }

// KeyID names a public key: the first 16 hex digits of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

// LoadPrivateKey reads an ed25519 private key from a PKCS #8 PEM file
// ("PRIVATE KEY"), as `haven pki signing-key` writes it.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("release signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("release signing key %s: no PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("release signing key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("release signing key %s: a %T, not an ed25519 key", path, k)
	}
	return ek, nil
}

// LoadPublicKey reads an ed25519 public key from a PKIX PEM file
// ("PUBLIC KEY").
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("release public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("release public key %s: no PEM \"PUBLIC KEY\" block", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("release public key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("release public key %s: a %T, not an ed25519 key", path, k)
	}
	return ek, nil
}

// MarshalKeys encodes key as PKCS #8 and its public half as PKIX PEM.
func MarshalKeys(key ed25519.PrivateKey) (private, public []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode signing key: %w", err)
	}
	pder, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), nil
}

// Sign returns the released table stream b with the coordinator's
// signature added to its schema metadata. The rows are unchanged.
func Sign(b []byte, key ed25519.PrivateKey) ([]byte, error) {
	rdr, err := ipc.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("sign released table: %w", err)
	}
	defer rdr.Release()
	var recs []arrow.Record
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	for rdr.Next() {
		r := rdr.Record()
		r.Retain()
		recs = append(recs, r)
	}
	if err := rdr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("sign released table: %w", err)
	}
	schema := rdr.Schema()
	prov, rows, err := digests(schema, recs)
	if err != nil {
		return nil, fmt.Errorf("sign released table: %w", err)
	}
	sig := ed25519.Sign(key, signedMessage(prov, rows))
	md := schema.Metadata()
	var keys, vals []string
	for i, k := range md.Keys() {
		if !isSignatureKey(k) {
			keys, vals = append(keys, k), append(vals, md.Values()[i])
		}
	}
	keys = append(keys, keySignature, keySignatureKeyID, keyProvenanceHash, keyRowsHash)
	vals = append(vals, base64.StdEncoding.EncodeToString(sig), KeyID(key.Public().(ed25519.PublicKey)), prov, rows)
	nmd := arrow.NewMetadata(keys, vals)
	signed := arrow.NewSchema(schema.Fields(), &nmd)
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(signed))
	for _, r := range recs {
		nr := array.NewRecord(signed, r.Columns(), r.NumRows())
		err := w.Write(nr)
		nr.Release()
		if err != nil {
			return nil, fmt.Errorf("sign released table: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("sign released table: %w", err)
	}
	return buf.Bytes(), nil
}

// Verify reads a released table from b, an Arrow IPC stream as `haven
// query fetch --format arrow` writes it, and checks the coordinator's
// signature with pub. It refuses an unsigned table, one signed by another
// key, and one whose provenance or rows differ from what was signed,
// saying which. b is treated as hostile: every message's framing and
// flatbuffer is checked before the Arrow reader sees it (arrowsafe), no
// allocation may exceed len(b), and each record is validated.
func Verify(b []byte, pub ed25519.PublicKey) (*Table, error) {
	if err := checkFraming(b); err != nil {
		return nil, fmt.Errorf("verify: not a readable Arrow IPC stream: %w", err)
	}
	var (
		schema *arrow.Schema
		recs   []arrow.Record
	)
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	err := arrowsafe.Guard(func() error {
		rdr, err := ipc.NewReader(bytes.NewReader(b), ipc.WithAllocator(arrowsafe.NewCappedAllocator(int64(len(b))+64)))
		if err != nil {
			return err
		}
		defer rdr.Release()
		for rdr.Next() {
			r := rdr.Record()
			if err := arrowsafe.ValidateRecord(r); err != nil {
				return err
			}
			r.Retain()
			recs = append(recs, r)
		}
		if err := rdr.Err(); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		schema = rdr.Schema()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("verify: the table's data is damaged: %w", err)
	}
	return verify(schema, recs, pub)
}

// checkFraming walks the IPC messages of b (continuation token, metadata
// length, metadata, body) and checks each message's metadata and that its
// buffers lie inside its body, so the Arrow reader, which believes the
// lengths it finds, only follows lengths that fit in b.
func checkFraming(b []byte) error {
	for at, n := 0, 0; ; n++ {
		if len(b)-at < 8 {
			return errors.New("the stream ends without an end-of-stream marker")
		}
		if cont := binary.LittleEndian.Uint32(b[at:]); cont != 0xFFFFFFFF {
			return fmt.Errorf("message %d: no continuation token (got %#08x)", n, cont)
		}
		ml := int64(int32(binary.LittleEndian.Uint32(b[at+4:])))
		at += 8
		if ml == 0 {
			if at != len(b) {
				return fmt.Errorf("%d bytes after the end-of-stream marker", len(b)-at)
			}
			return nil
		}
		if ml < 0 || ml%8 != 0 || ml > int64(len(b)-at) {
			return fmt.Errorf("message %d: metadata length %d", n, ml)
		}
		h, err := arrowsafe.VerifyMessage(b[at : at+int(ml)])
		if err != nil {
			return fmt.Errorf("message %d: %w", n, err)
		}
		at += int(ml)
		if h.BodyLength < 0 || h.BodyLength%8 != 0 || h.BodyLength > int64(len(b)-at) {
			return fmt.Errorf("message %d: body length %d", n, h.BodyLength)
		}
		if err := h.CheckBody(h.BodyLength); err != nil {
			return fmt.Errorf("message %d: %w", n, err)
		}
		at += int(h.BodyLength)
	}
}

func verify(schema *arrow.Schema, recs []arrow.Record, pub ed25519.PublicKey) (t *Table, err error) {
	defer func() {
		if p := recover(); p != nil {
			t, err = nil, fmt.Errorf("verify: the table's data is damaged: %v", p)
		}
	}()
	md := schema.Metadata()
	get := func(k string) string {
		if i := md.FindKey(k); i >= 0 {
			return md.Values()[i]
		}
		return ""
	}
	sigText := get(keySignature)
	if sigText == "" {
		return nil, errors.New("verify: the table is not signed")
	}
	if id, want := get(keySignatureKeyID), KeyID(pub); id != want {
		return nil, fmt.Errorf("verify: the table is signed by key %s, not by the given key %s", id, want)
	}
	sig, err := base64.StdEncoding.DecodeString(sigText)
	if err != nil {
		return nil, fmt.Errorf("verify: signature metadata %s: %w", keySignature, err)
	}
	signedProv, signedRows := get(keyProvenanceHash), get(keyRowsHash)
	if !ed25519.Verify(pub, signedMessage(signedProv, signedRows), sig) {
		return nil, errors.New("verify: the signature does not match the signed digests: the signature or its digests were altered")
	}
	prov, rows, err := digests(schema, recs)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	var bad []string
	if prov != signedProv {
		bad = append(bad, "the provenance (schema metadata: run, definition, parameters, disclosure rules, coverage, columns) differs from what was signed")
	}
	if rows != signedRows {
		bad = append(bad, "the rows differ from what was signed")
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("verify: %s", strings.Join(bad, "; "))
	}
	rr, err := array.NewRecordReader(schema, recs)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer rr.Release()
	return Read(rr)
}

func signedMessage(prov, rows string) []byte {
	return []byte(signedPrefix + prov + "\n" + rows)
}

// digests are the SHA-256 of the provenance (every non-signature schema
// metadata entry, sorted by key, and the fields' names, types and
// metadata) and of the rows (each column's values, null marked).
func digests(schema *arrow.Schema, recs []arrow.Record) (prov, rows string, err error) {
	md := schema.Metadata()
	entries := map[string]string{}
	for i, k := range md.Keys() {
		if !isSignatureKey(k) {
			if _, dup := entries[k]; dup {
				return "", "", fmt.Errorf("schema metadata key %s appears twice", k)
			}
			entries[k] = md.Values()[i]
		}
	}
	var fields []string
	for _, f := range schema.Fields() {
		fields = append(fields, fmt.Sprintf("%s %s nullable=%t %v", f.Name, f.Type, f.Nullable, f.Metadata))
	}
	p, err := json.Marshal(struct {
		Metadata map[string]string `json:"metadata"`
		Fields   []string          `json:"fields"`
	}{entries, fields})
	if err != nil {
		return "", "", err
	}
	ph := sha256.Sum256(p)
	h := sha256.New()
	for _, r := range recs {
		if !r.Schema().Equal(schema) {
			return "", "", errors.New("a record batch's columns differ from the schema")
		}
		for i := range int(r.NumRows()) {
			row := make([]any, r.NumCols())
			for c, col := range r.Columns() {
				if col.IsNull(i) {
					continue
				}
				switch col := col.(type) {
				case *array.String:
					row[c] = col.Value(i)
				case *array.Int64:
					row[c] = col.Value(i)
				case *array.Float64:
					row[c] = fmt.Sprintf("%x", col.Value(i)) // exact bits, NaN included
				default:
					return "", "", fmt.Errorf("column %s is %s, not a released table's type", schema.Field(c).Name, col.DataType())
				}
			}
			b, err := json.Marshal(row)
			if err != nil {
				return "", "", err
			}
			h.Write(b)
			h.Write([]byte{'\n'})
		}
	}
	return hex.EncodeToString(ph[:]), hex.EncodeToString(h.Sum(nil)), nil
}
