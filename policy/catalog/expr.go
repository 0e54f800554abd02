package catalog

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The two small expression languages of a definition: date expressions
// (`$index_date + followup_days`) and measure conditions
// (`emergency_admissions > 0 and latest_sbp < $target`). Both are tokenised
// and parsed here into the AST; neither is ever passed on as text.

// exprError is a syntax error at a byte offset in an expression.
type exprError struct {
	off int
	msg string
}

// paramRef is a parameter an expression names, for the caller to check
// against the declared parameters.
type paramRef struct {
	name string
	off  int
	want ParamType
	// bare is set for an offset written without `$`; it must name a declared
	// int parameter (a typo must not silently become something else).
	bare bool
}

func isIdentStart(c byte) bool { return c >= 'a' && c <= 'z' }
func isIdentByte(c byte) bool  { return isIdentStart(c) || c == '_' || isDigit(c) }
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }

// scanIdent returns the identifier at s[i:] and the offset after it.
func scanIdent(s string, i int) (string, int) {
	j := i
	for j < len(s) && isIdentByte(s[j]) {
		j++
	}
	return s[i:j], j
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

// parseDateExpr parses `base [(+|-) offset]`, where base is YYYY-MM-DD or
// $param and offset is digits, $param or a bare int parameter name. A
// literal date plus a literal offset is folded into one date, and a zero
// offset dropped, so that equal dates have equal ASTs. With a syntax error
// it still returns the parameters named before it, so that they are not
// also reported as unused.
func parseDateExpr(s string) (DateExpr, []paramRef, *exprError) {
	var e DateExpr
	var refs []paramRef
	i := skipSpace(s, 0)
	switch {
	case i == len(s):
		return e, nil, &exprError{i, "empty date: want YYYY-MM-DD or $parameter"}
	case s[i] == '$':
		name, j := scanIdent(s, i+1)
		if name == "" || !isIdentStart(name[0]) {
			return e, nil, &exprError{i, "want a parameter name after $"}
		}
		e.Param = name
		refs = append(refs, paramRef{name: name, off: i, want: ParamDate})
		i = j
	case isDigit(s[i]):
		j := i
		for j < len(s) && (isDigit(s[j]) || s[j] == '-') && j-i < len(dateLayout) {
			j++
		}
		d, err := ParseDate(s[i:j])
		if err != nil {
			return e, nil, &exprError{i, err.Error()}
		}
		e.Date = d
		i = j
	default:
		return e, nil, &exprError{i, fmt.Sprintf("unexpected %q: want YYYY-MM-DD or $parameter", s[i:i+1])}
	}
	i = skipSpace(s, i)
	if i == len(s) {
		return e, refs, nil
	}
	sign := int64(1)
	switch s[i] {
	case '+':
	case '-':
		sign = -1
	default:
		return e, refs, &exprError{i, fmt.Sprintf("unexpected %q: want + or - and a number of days", s[i:])}
	}
	i = skipSpace(s, i+1)
	switch {
	case i == len(s):
		return e, refs, &exprError{i, "want a number of days or an int parameter after the operator"}
	case isDigit(s[i]):
		j := i
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		n, err := strconv.ParseInt(s[i:j], 10, 64)
		if err != nil || n > 1<<30 {
			return e, refs, &exprError{i, fmt.Sprintf("%s days is too large", s[i:j])}
		}
		e.Offset.Value = sign * n
		i = j
	case s[i] == '$' || isIdentStart(s[i]):
		bare := s[i] != '$'
		start := i
		if !bare {
			i++
		}
		name, j := scanIdent(s, i)
		if name == "" || !isIdentStart(name[0]) {
			return e, refs, &exprError{start, "want a parameter name after $"}
		}
		e.Offset.Param = name
		e.Negate = sign < 0
		refs = append(refs, paramRef{name: name, off: start, want: ParamInt, bare: bare})
		i = j
	default:
		return e, refs, &exprError{i, fmt.Sprintf("unexpected %q: want a number of days or an int parameter", s[i:i+1])}
	}
	if i = skipSpace(s, i); i != len(s) {
		return e, refs, &exprError{i, fmt.Sprintf("unexpected %q after the date expression", s[i:])}
	}
	if e.Param == "" && e.Offset.Param == "" {
		d, ok := e.Date.addDays(e.Offset.Value)
		if !ok {
			return e, nil, &exprError{0, "the date falls outside the years 1000 to 9999"}
		}
		e.Date, e.Offset.Value = d, 0
	}
	return e, refs, nil
}

// String returns the canonical form: `2020-01-01`, `$d`, `$d + 30`,
// `$d - 365`, `$d + $n`.
func (e DateExpr) String() string {
	var b strings.Builder
	if e.Param != "" {
		b.WriteString("$" + e.Param)
	} else {
		b.WriteString(e.Date.String())
	}
	switch {
	case e.Offset.Param != "" && e.Negate:
		b.WriteString(" - $" + e.Offset.Param)
	case e.Offset.Param != "":
		b.WriteString(" + $" + e.Offset.Param)
	case e.Offset.Value > 0:
		fmt.Fprintf(&b, " + %d", e.Offset.Value)
	case e.Offset.Value < 0:
		fmt.Fprintf(&b, " - %d", -e.Offset.Value)
	}
	return b.String()
}

// String returns the canonical form: a decimal number or `$param`.
func (e IntExpr) String() string {
	if e.Param != "" {
		return "$" + e.Param
	}
	return strconv.FormatInt(e.Value, 10)
}

// literalOrder compares two date expressions whose difference is known
// without parameter values: both literal, or the same base parameter and
// the same parameter offset. ok is false when it depends on the values.
func literalOrder(a, b DateExpr) (cmp int64, ok bool) {
	if a.Param != b.Param || a.Offset.Param != b.Offset.Param {
		return 0, false
	}
	if a.Offset.Param != "" && a.Negate != b.Negate {
		return 0, false
	}
	da := int64(a.Date) + a.Offset.Value
	db := int64(b.Date) + b.Offset.Value
	return da - db, true
}

// Condition grammar:
//
//	cond       = comparison { "and" comparison }
//	comparison = variable op operand
//	op         = "<" | "<=" | ">" | ">=" | "==" | "!="
//	operand    = [ "-" ] digits [ "." digits ] | "$" parameter
type condToken struct {
	kind byte // 'i' ident, 'p' $param, 'n' number, 'o' operator
	text string
	off  int
}

func tokenizeCond(s string) ([]condToken, *exprError) {
	var toks []condToken
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case isIdentStart(c):
			name, j := scanIdent(s, i)
			toks = append(toks, condToken{'i', name, i})
			i = j
		case c == '$':
			name, j := scanIdent(s, i+1)
			if name == "" || !isIdentStart(name[0]) {
				return toks, &exprError{i, "want a parameter name after $"}
			}
			toks = append(toks, condToken{'p', name, i})
			i = j
		case isDigit(c) || c == '-':
			j := i + 1
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			if j < len(s) && s[j] == '.' {
				j++
				for j < len(s) && isDigit(s[j]) {
					j++
				}
			}
			toks = append(toks, condToken{'n', s[i:j], i})
			i = j
		case c == '<' || c == '>' || c == '=' || c == '!':
			j := i + 1
			if j < len(s) && s[j] == '=' {
				j++
			}
			op := s[i:j]
			switch Op(op) {
			case OpLT, OpLE, OpGT, OpGE, OpEQ, OpNE:
			default:
				return toks, &exprError{i, fmt.Sprintf("unknown operator %q: want <, <=, >, >=, == or !=", op)}
			}
			toks = append(toks, condToken{'o', op, i})
			i = j
		default:
			return toks, &exprError{i, fmt.Sprintf("unexpected %q in condition", s[i:i+1])}
		}
	}
	return toks, nil
}

// condRef is a variable or parameter a condition names.
type condRef struct {
	name  string
	off   int
	param bool
}

// parseCond parses a condition. With a syntax error it returns the names
// read before it, so that they are not also reported as unused.
func parseCond(s string) (*Cond, []condRef, *exprError) {
	toks, err := tokenizeCond(s)
	if err != nil {
		var refs []condRef
		for _, t := range toks {
			if t.kind == 'p' || t.kind == 'i' && t.text != "and" {
				refs = append(refs, condRef{name: t.text, off: t.off, param: t.kind == 'p'})
			}
		}
		return nil, refs, err
	}
	if len(toks) == 0 {
		return nil, nil, &exprError{0, "empty condition: want e.g. `admissions > 0`"}
	}
	var c Cond
	var refs []condRef
	end := func(i int) int {
		if i < len(toks) {
			return toks[i].off
		}
		return len(s)
	}
	for i := 0; ; {
		if i >= len(toks) || toks[i].kind != 'i' || toks[i].text == "and" {
			return nil, refs, &exprError{end(i), "want a variable name"}
		}
		cmp := Comparison{Var: toks[i].text}
		refs = append(refs, condRef{name: toks[i].text, off: toks[i].off})
		if i+1 >= len(toks) || toks[i+1].kind != 'o' {
			return nil, refs, &exprError{end(i + 1), "want a comparison operator (<, <=, >, >=, ==, !=)"}
		}
		cmp.Op = Op(toks[i+1].text)
		if i+2 >= len(toks) {
			return nil, refs, &exprError{len(s), "want a number or $parameter"}
		}
		switch t := toks[i+2]; t.kind {
		case 'n':
			f, perr := strconv.ParseFloat(t.text, 64)
			if perr != nil || math.IsInf(f, 0) || t.text == "-" {
				return nil, refs, &exprError{t.off, fmt.Sprintf("%q is not a number", t.text)}
			}
			if f == 0 {
				f = 0 // -0 and 0 are the same condition
			}
			cmp.Value.Number = f
		case 'p':
			cmp.Value.Param = t.text
			refs = append(refs, condRef{name: t.text, off: t.off, param: true})
		default:
			return nil, refs, &exprError{t.off, "want a number or $parameter"}
		}
		c.Terms = append(c.Terms, cmp)
		i += 3
		if i == len(toks) {
			return &c, refs, nil
		}
		if toks[i].kind != 'i' || toks[i].text != "and" {
			return nil, refs, &exprError{toks[i].off, fmt.Sprintf("unexpected %q: join comparisons with `and`", toks[i].text)}
		}
		i++
	}
}

// String returns the canonical form of the condition, with single spaces
// and numbers in shortest decimal form.
func (c *Cond) String() string {
	parts := make([]string, len(c.Terms))
	for i, t := range c.Terms {
		parts[i] = t.Var + " " + string(t.Op) + " " + t.Value.String()
	}
	return strings.Join(parts, " and ")
}

// String returns the operand in canonical form.
func (o Operand) String() string {
	if o.Param != "" {
		return "$" + o.Param
	}
	return strconv.FormatFloat(o.Number, 'f', -1, 64)
}
