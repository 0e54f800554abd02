package catalog

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Helpers that read typed values out of yaml.Node trees. Each reports a
// mistake into the parser's ErrorList with the node's position and the
// field path, and returns ok=false so the caller can carry on with the
// next field: every error in a file is found in one pass.

func (p *parser) pos(n *yaml.Node) Pos { return Pos{File: p.file, Line: n.Line, Column: n.Column} }

func (p *parser) errorf(n *yaml.Node, path, format string, args ...any) {
	p.errs.add(p.pos(n), path, format, args...)
}

// errorAt reports an error at a byte offset inside a scalar, when the
// scalar sits on one line so that the offset maps to a column.
func (p *parser) errorAt(n *yaml.Node, off int, path, format string, args ...any) {
	pos := p.pos(n)
	switch n.Style {
	case 0:
		pos.Column += off
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		if !strings.ContainsAny(n.Value, "\n'\"\\") {
			pos.Column += off + 1
		}
	}
	p.errs.add(pos, path, format, args...)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// describe names a node's kind for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	switch n.ShortTag() {
	case "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	case "!!int":
		return "the integer " + n.Value
	case "!!float":
		return "the number " + n.Value
	case "!!bool":
		return "the boolean " + n.Value
	case "!!null":
		return "nothing (null)"
	case "!!timestamp":
		return "the date " + n.Value
	}
	return fmt.Sprintf("%q tagged %s", n.Value, n.Tag)
}

// noAlias reports an alias: definitions are reviewed as written, and an
// alias would make one edit change several places unseen.
func (p *parser) noAlias(n *yaml.Node, path string) bool {
	if n.Kind == yaml.AliasNode {
		p.errorf(n, path, "YAML aliases (*%s) are not allowed in definitions; write the value out", n.Value)
		return false
	}
	return true
}

// entry is one key and value of a mapping.
type entry struct {
	key     string
	keyNode *yaml.Node
	val     *yaml.Node
}

// entries returns the pairs of a mapping in file order, reporting non-string
// and duplicate keys.
func (p *parser) entries(n *yaml.Node, path string) ([]entry, bool) {
	if !p.noAlias(n, path) {
		return nil, false
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "want a mapping, got %s", describe(n))
		return nil, false
	}
	var out []entry
	first := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			p.errorf(k, path, "keys must be plain names, got %s", describe(k))
			continue
		}
		if f, dup := first[k.Value]; dup {
			p.errorf(k, join(path, k.Value), "duplicate key %q (first at line %d)", k.Value, f.Line)
			continue
		}
		first[k.Value] = k
		out = append(out, entry{key: k.Value, keyNode: k, val: v})
	}
	return out, true
}

// fieldSet is a mapping whose keys are a fixed set of field names.
type fieldSet struct {
	path  string
	node  *yaml.Node
	order []string
	vals  map[string]*yaml.Node
	keys  map[string]*yaml.Node
}

func (f fieldSet) has(k string) bool           { _, ok := f.vals[k]; return ok }
func (f fieldSet) get(k string) *yaml.Node     { return f.vals[k] }
func (f fieldSet) at(k string) string          { return join(f.path, k) }
func (f fieldSet) keyNode(k string) *yaml.Node { return f.keys[k] }

// fields reads a mapping whose keys must be among allowed; unknown keys are
// reported with the nearest allowed spelling.
func (p *parser) fields(n *yaml.Node, path string, allowed ...string) (fieldSet, bool) {
	fs := fieldSet{path: path, node: n, vals: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}}
	es, ok := p.entries(n, path)
	if !ok {
		return fs, false
	}
	for _, e := range es {
		if !contains(allowed, e.key) {
			p.errorf(e.keyNode, join(path, e.key), "unknown field %q%s", e.key, suggest(e.key, allowed))
			continue
		}
		fs.order = append(fs.order, e.key)
		fs.vals[e.key] = e.val
		fs.keys[e.key] = e.keyNode
	}
	return fs, true
}

// require reports each of names missing from fs.
func (p *parser) require(fs fieldSet, names ...string) bool {
	ok := true
	for _, k := range names {
		if !fs.has(k) {
			p.errorf(fs.node, fs.path, "missing required field %q", k)
			ok = false
		}
	}
	return ok
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (p *parser) scalar(n *yaml.Node, path, want string) bool {
	if !p.noAlias(n, path) {
		return false
	}
	if n.Kind != yaml.ScalarNode {
		p.errorf(n, path, "want %s, got %s", want, describe(n))
		return false
	}
	return true
}

// str reads a string. Only YAML strings qualify: `title: 2024` is an
// integer and is reported, so the type a reviewer sees is the type parsed.
func (p *parser) str(n *yaml.Node, path string) (string, bool) {
	if !p.scalar(n, path, "a string") {
		return "", false
	}
	if n.ShortTag() != "!!str" {
		p.errorf(n, path, "want a string, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

// int reads an integer.
func (p *parser) int(n *yaml.Node, path string) (int64, bool) {
	if !p.scalar(n, path, "an integer") {
		return 0, false
	}
	if n.ShortTag() != "!!int" {
		p.errorf(n, path, "want an integer, got %s", describe(n))
		return 0, false
	}
	var v int64
	if err := n.Decode(&v); err != nil {
		p.errorf(n, path, "%s is not a 64-bit integer", n.Value)
		return 0, false
	}
	return v, true
}

// boolean reads true or false.
func (p *parser) boolean(n *yaml.Node, path string) (bool, bool) {
	if !p.scalar(n, path, "true or false") {
		return false, false
	}
	if n.ShortTag() != "!!bool" {
		p.errorf(n, path, "want true or false, got %s", describe(n))
		return false, false
	}
	var v bool
	if err := n.Decode(&v); err != nil {
		p.errorf(n, path, "want true or false, got %s", describe(n))
		return false, false
	}
	return v, true
}

// textish reads a scalar that is a string in the definition language (a
// date, a date expression) whatever YAML resolved it to: an unquoted
// 2020-01-01 is a YAML timestamp, and quoting it must not change its meaning.
func (p *parser) textish(n *yaml.Node, path, want string) (string, bool) {
	if !p.scalar(n, path, want) {
		return "", false
	}
	switch n.ShortTag() {
	case "!!str", "!!timestamp":
		return n.Value, true
	}
	p.errorf(n, path, "want %s, got %s", want, describe(n))
	return "", false
}

func (p *parser) seq(n *yaml.Node, path string) ([]*yaml.Node, bool) {
	if !p.noAlias(n, path) {
		return nil, false
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, path, "want a list, got %s", describe(n))
		return nil, false
	}
	return n.Content, true
}
