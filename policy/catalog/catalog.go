package catalog

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// The layout of a governance bundle that Load reads.
const (
	DefinitionsDir = "definitions"
	CodelistsDir   = "codelists"
	// DefinitionFileName is the one file in each definitions/<id>/
	// directory. Each definition has a directory of its own because OPA,
	// loading a bundle directory as plain data (opa test without -b), merges
	// every YAML file in a directory at the same data path, where the
	// definitions' shared keys would conflict.
	DefinitionFileName = "definition.yaml"
)

// DefinitionPath returns where the definition with the given id lives in a
// bundle: definitions/<id>/definition.yaml.
func DefinitionPath(id string) string {
	return path.Join(DefinitionsDir, id, DefinitionFileName)
}

// Catalog is the approved catalogue of one governance bundle: every
// definition and codelist, parsed and checked. It is immutable.
type Catalog struct {
	defs      map[string]*Definition
	codelists map[string]*Codelist
}

// Load reads codelists/*.csv and definitions/*/definition.yaml from fsys,
// normally the verified contents of a signed bundle; it reads nothing outside
// fsys. Every file must parse and check, and definitions/<id>/definition.yaml
// must declare that id. A bundle without the directories gives an empty
// catalogue, which approves nothing. All mistakes across all files are
// returned at once, as an ErrorList.
func Load(fsys fs.FS) (*Catalog, error) {
	c := &Catalog{defs: map[string]*Definition{}, codelists: map[string]*Codelist{}}
	var errs ErrorList

	files, err := listDir(fsys, CodelistsDir, ".csv", &errs)
	if err != nil {
		return nil, err
	}
	broken := map[string]bool{}
	for _, name := range files {
		src, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("load catalogue: %w", err)
		}
		cl, err := ParseCodelist(name, src)
		if err != nil {
			errs = appendErrors(errs, name, err)
			broken[strings.TrimSuffix(path.Base(name), ".csv")] = true
			continue
		}
		c.codelists[cl.Name] = cl
	}

	files, err = definitionFiles(fsys, &errs)
	if err != nil {
		return nil, err
	}
	for _, name := range files {
		src, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("load catalogue: %w", err)
		}
		d, err := parseDefinition(name, src, c.codelists, broken)
		if err != nil {
			errs = appendErrors(errs, name, err)
			continue
		}
		if want := path.Base(path.Dir(name)); d.ID != want {
			errs.add(Pos{File: name}, "id", "file %s declares id %q; name the directory %s/", name, d.ID, path.Dir(DefinitionPath(d.ID)))
			continue
		}
		c.defs[d.ID] = d
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// readDir returns the entries of a directory of the bundle; a missing
// one has none, since a bundle need not have every kind of file.
func readDir(fsys fs.FS, dir string) ([]fs.DirEntry, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load catalogue: %w", err)
	}
	return entries, nil
}

// listDir returns the files directly under dir, which must all end in ext.
// A missing dir is empty; anything else in it is reported, because a stray
// file in a signed bundle is a mistake someone should see.
func listDir(fsys fs.FS, dir, ext string, errs *ErrorList) ([]string, error) {
	entries, err := readDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := path.Join(dir, e.Name())
		switch {
		case e.IsDir():
			errs.add(Pos{File: name}, "", "unexpected directory in %s/", dir)
		case !strings.HasSuffix(e.Name(), ext):
			errs.add(Pos{File: name}, "", "unexpected file in %s/: only *%s files belong there", dir, ext)
		default:
			out = append(out, name)
		}
	}
	return out, nil
}

// definitionFiles returns definitions/<id>/definition.yaml for every
// directory under definitions/. A missing definitions/ is empty; a file
// directly under it, a directory without a definition.yaml, and anything
// beside the definition.yaml are reported, as listDir does.
func definitionFiles(fsys fs.FS, errs *ErrorList) ([]string, error) {
	entries, err := readDir(fsys, DefinitionsDir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		dir := path.Join(DefinitionsDir, e.Name())
		if !e.IsDir() {
			errs.add(Pos{File: dir}, "", "unexpected file in %s/: each definition is %s", DefinitionsDir, DefinitionPath("<id>"))
			continue
		}
		inner, err := fs.ReadDir(fsys, dir)
		if err != nil {
			return nil, fmt.Errorf("load catalogue: %w", err)
		}
		found := false
		for _, f := range inner {
			name := path.Join(dir, f.Name())
			switch {
			case f.IsDir():
				errs.add(Pos{File: name}, "", "unexpected directory in %s/", dir)
			case f.Name() != DefinitionFileName:
				errs.add(Pos{File: name}, "", "unexpected file in %s/: only %s belongs there", dir, DefinitionFileName)
			default:
				found = true
				out = append(out, name)
			}
		}
		if !found {
			errs.add(Pos{File: dir}, "", "no %s in %s/", DefinitionFileName, dir)
		}
	}
	return out, nil
}

func appendErrors(errs ErrorList, file string, err error) ErrorList {
	var list ErrorList
	if errors.As(err, &list) {
		return append(errs, list...)
	}
	return append(errs, &Error{Pos: Pos{File: file}, Msg: err.Error()})
}

// Definitions returns every definition, in id order.
func (c *Catalog) Definitions() []*Definition {
	out := make([]*Definition, 0, len(c.defs))
	for _, d := range c.defs {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *Definition) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Get returns the definition with the given id.
func (c *Catalog) Get(id string) (*Definition, bool) {
	d, ok := c.defs[id]
	return d, ok
}

// Codelist returns the codelist with the given name.
func (c *Catalog) Codelist(name string) (*Codelist, bool) {
	cl, ok := c.codelists[name]
	return cl, ok
}

// ParseDefinition parses a definition against the catalogue's codelists,
// e.g. to check a draft before it is added to the bundle.
func (c *Catalog) ParseDefinition(file string, src []byte) (*Definition, error) {
	return ParseDefinition(file, src, c.codelists)
}

// Codelists returns every codelist in the bundle, in name order, including
// any no definition uses.
func (c *Catalog) Codelists() []*Codelist {
	out := make([]*Codelist, 0, len(c.codelists))
	for _, cl := range c.codelists {
		out = append(out, cl)
	}
	slices.SortFunc(out, func(a, b *Codelist) int { return strings.Compare(a.Name, b.Name) })
	return out
}
