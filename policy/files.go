package policy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader/filter"
)

// maxBundleBytes bounds how much a bundle may hold in all. The reference
// bundle is tens of kilobytes; the bound only stops a runaway file or a
// decompression bomb from filling memory.
const maxBundleBytes = 64 << 20

// signaturesFile is the name OPA gives the signatures of a bundle.
const signaturesFile = ".signatures.json"

// files is a bundle read into memory: every regular file, by its
// slash-separated path relative to the bundle root. It is read once and never
// changed, so what was verified is exactly what OPA and the catalogue use.
type files map[string][]byte

// readBundle reads the bundle at p, a directory or a .tar.gz (.tgz) file.
func readBundle(p string) (files, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return readDir(p)
	}
	if !strings.HasSuffix(p, ".tar.gz") && !strings.HasSuffix(p, ".tgz") {
		return nil, fmt.Errorf("%s is neither a directory nor a .tar.gz bundle", p)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readTarball(f)
}

func readDir(dir string) (files, error) {
	// The bundle directory itself may be a link, so that a new bundle can
	// be swapped in with one rename; links inside it are refused.
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	fsys := make(files)
	var total int64
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		// A link could point anywhere and change after verification, so a
		// bundle holds regular files only.
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file (links are not allowed in a bundle)", rel)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if total += int64(len(b)); total > maxBundleBytes {
			return fmt.Errorf("bundle is larger than %d bytes", maxBundleBytes)
		}
		fsys[rel] = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	return fsys, nil
}

func readTarball(r io.Reader) (files, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("not a gzip file: %w", err)
	}
	tr := tar.NewReader(zr)
	fsys := make(files)
	var total int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return fsys, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read tar: %w", err)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
		switch h.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return nil, fmt.Errorf("%s: not a regular file (links are not allowed in a bundle)", h.Name)
		}
		if !fs.ValidPath(name) || name == "." {
			return nil, fmt.Errorf("%s: invalid path in bundle", h.Name)
		}
		if _, dup := fsys[name]; dup {
			return nil, fmt.Errorf("%s: appears twice in bundle", name)
		}
		if total += h.Size; h.Size < 0 || total > maxBundleBytes {
			return nil, fmt.Errorf("bundle is larger than %d bytes", maxBundleBytes)
		}
		b, err := io.ReadAll(io.LimitReader(tr, h.Size))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		fsys[name] = b
	}
}

// names returns the paths of the files, sorted.
func (f files) names() []string {
	return slices.Sorted(func(yield func(string) bool) {
		for k := range f {
			if !yield(k) {
				return
			}
		}
	})
}

// fingerprint is a digest of every path and content, to tell whether a
// bundle on disk changed.
func (f files) fingerprint() [sha256.Size]byte {
	h := sha256.New()
	for _, name := range f.names() {
		fmt.Fprintf(h, "%d:%s:%d:", len(name), name, len(f[name]))
		h.Write(f[name])
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// writeTarball writes f as a gzipped tar with paths relative to the bundle
// root, the layout OPA expects of a bundle file. Entries are sorted and
// carry no owner or time, so the same files give the same bytes.
func (f files) writeTarball(w io.Writer) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	for _, name := range f.names() {
		h := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     name,
			Mode:     0o644,
			Size:     int64(len(f[name])),
			ModTime:  time.Unix(0, 0),
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(f[name]); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// loader hands the files to OPA's bundle reader. OPA's own fs.FS loader
// strips the leading dot from files at the bundle root, which loses
// .signatures.json, so the files are handed over directly.
type loader struct {
	names []string
	fsys  files
	next  int
	limit int64
}

var _ bundle.DirectoryLoader = (*loader)(nil)

func newLoader(f files) *loader { return &loader{names: f.names(), fsys: f} }

func (l *loader) NextFile() (*bundle.Descriptor, error) {
	if l.next >= len(l.names) {
		return nil, io.EOF
	}
	name := l.names[l.next]
	l.next++
	b := l.fsys[name]
	if l.limit > 0 && int64(len(b)) > l.limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, l.limit)
	}
	p := "/" + name
	return bundle.NewDescriptor(p, p, bytes.NewBuffer(b)), nil
}

// WithFilter is not supported: a verified bundle is read whole.
func (l *loader) WithFilter(filter.LoaderFilter) bundle.DirectoryLoader { return l }

// WithPathFormat is not supported: paths are always slash-rooted.
func (l *loader) WithPathFormat(bundle.PathFormat) bundle.DirectoryLoader { return l }

func (l *loader) WithSizeLimitBytes(n int64) bundle.DirectoryLoader { l.limit = n; return l }

// WithFollowSymlinks has no effect: the files are already in memory.
func (l *loader) WithFollowSymlinks(bool) bundle.DirectoryLoader { return l }

// asFS returns the files as a read-only fs.FS.
func (f files) asFS() fs.FS { return newMemFS(f) }

// memFS is a read-only fs.FS over files. Directories are implied by the
// file paths.
type memFS struct {
	files files
	dirs  map[string][]fs.DirEntry
}

func newMemFS(f files) *memFS {
	m := &memFS{files: f, dirs: map[string][]fs.DirEntry{".": nil}}
	seen := map[string]bool{}
	for _, name := range f.names() {
		m.addEntry(path.Dir(name), &memInfo{name: path.Base(name), size: int64(len(f[name]))})
		for d := path.Dir(name); d != "." && !seen[d]; d = path.Dir(d) {
			seen[d] = true
			m.addEntry(path.Dir(d), &memInfo{name: path.Base(d), dir: true})
			if _, ok := m.dirs[d]; !ok {
				m.dirs[d] = nil
			}
		}
	}
	for d := range m.dirs {
		slices.SortFunc(m.dirs[d], func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	}
	return m
}

func (m *memFS) addEntry(dir string, e *memInfo) { m.dirs[dir] = append(m.dirs[dir], e) }

var (
	_ fs.ReadFileFS = (*memFS)(nil)
	_ fs.ReadDirFS  = (*memFS)(nil)
)

func (m *memFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if b, ok := m.files[name]; ok {
		return &memFile{info: &memInfo{name: path.Base(name), size: int64(len(b))}, r: bytes.NewReader(b)}, nil
	}
	if entries, ok := m.dirs[name]; ok {
		return &memDir{info: &memInfo{name: path.Base(name), dir: true}, entries: entries}, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

// ReadFile returns a copy, so that no reader can change the verified bytes.
func (m *memFS) ReadFile(name string) ([]byte, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: fs.ErrInvalid}
	}
	b, ok := m.files[name]
	if !ok {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: fs.ErrNotExist}
	}
	return bytes.Clone(b), nil
}

func (m *memFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrInvalid}
	}
	entries, ok := m.dirs[name]
	if !ok {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	return slices.Clone(entries), nil
}

// memInfo is both the fs.FileInfo and the fs.DirEntry of a file or
// directory.
type memInfo struct {
	name string
	size int64
	dir  bool
}

func (i *memInfo) Name() string       { return i.name }
func (i *memInfo) Size() int64        { return i.size }
func (i *memInfo) ModTime() time.Time { return time.Time{} }
func (i *memInfo) IsDir() bool        { return i.dir }
func (i *memInfo) Sys() any           { return nil }
func (i *memInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o555
	}
	return 0o444
}
func (i *memInfo) Type() fs.FileMode          { return i.Mode().Type() }
func (i *memInfo) Info() (fs.FileInfo, error) { return i, nil }

type memFile struct {
	info *memInfo
	r    *bytes.Reader
}

func (f *memFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *memFile) Read(b []byte) (int, error) { return f.r.Read(b) }
func (f *memFile) Close() error               { return nil }

type memDir struct {
	info    *memInfo
	entries []fs.DirEntry
	next    int
}

func (d *memDir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *memDir) Close() error               { return nil }
func (d *memDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: errors.New("is a directory")}
}

func (d *memDir) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.next:]
	if n <= 0 {
		d.next = len(d.entries)
		return slices.Clone(rest), nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(rest))
	d.next += n
	return slices.Clone(rest[:n]), nil
}
