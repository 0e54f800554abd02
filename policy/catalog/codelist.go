package catalog

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"
)

// CodeSystem is the coding scheme of a codelist.
type CodeSystem string

// Code systems, one for each kind of code column in the CDM.
const (
	// SNOMEDCT codes clinical_event.snomed_code and
	// ae_attendance.diagnosis_snomed: SNOMED CT concept identifiers.
	SNOMEDCT CodeSystem = "snomed-ct"
	// DMD codes medication.dmd_code: NHS Dictionary of medicines and
	// devices identifiers (VTM, VMP, AMP…), which are SNOMED CT concept
	// identifiers from the UK drug extension.
	DMD CodeSystem = "dmd"
	// ICD10 codes apc_episode.primary_diagnosis.
	ICD10 CodeSystem = "icd-10"
)

// CodeSystems lists every code system, in a stable order.
func CodeSystems() []CodeSystem { return []CodeSystem{SNOMEDCT, DMD, ICD10} }

// PrefixMatch reports whether a code in a list of this system stands for
// itself and all its subdivisions: ICD-10 `E11` matches `E11`, `E119` and
// `E11.9`. SNOMED CT and dm+d codes match exactly; their hierarchies are
// expanded into the list when it is written, not at query time.
func (s CodeSystem) PrefixMatch() bool { return s == ICD10 }

// Code is one entry of a codelist.
type Code struct {
	Code string
	Term string
}

// Codelist is a named set of codes of one system, read from
// codelists/<name>.csv. Codes are held normalised (ICD-10 without its dot)
// and sorted.
type Codelist struct {
	Name   string
	System CodeSystem
	codes  []Code
}

// Codes returns the codes in code order. The slice is a copy.
func (c *Codelist) Codes() []Code { return slices.Clone(c.codes) }

// Values returns just the codes, in order.
func (c *Codelist) Values() []string {
	out := make([]string, len(c.codes))
	for i, x := range c.codes {
		out[i] = x.Code
	}
	return out
}

// Len is the number of codes.
func (c *Codelist) Len() int { return len(c.codes) }

// Contains reports whether code (in any accepted spelling) is in the list
// itself, without prefix matching.
func (c *Codelist) Contains(code string) bool {
	code = normalizeCode(c.System, code)
	_, ok := slices.BinarySearchFunc(c.codes, code, func(x Code, s string) int { return strings.Compare(x.Code, s) })
	return ok
}

// Matches reports whether a recorded code falls under the list, applying
// the system's matching rule (see PrefixMatch). It is the reference that
// SQL compilers must agree with.
func (c *Codelist) Matches(code string) bool {
	if !c.System.PrefixMatch() {
		return c.Contains(code)
	}
	code = normalizeCode(c.System, code)
	for _, x := range c.codes {
		if strings.HasPrefix(code, x.Code) {
			return true
		}
	}
	return false
}

var (
	codelistNameRE = regexp.MustCompile(`^[a-z0-9]+(?:[-_][a-z0-9]+)*$`)
	sctidRE        = regexp.MustCompile(`^[1-9][0-9]{5,17}$`)
	icd10RE        = regexp.MustCompile(`^[A-Z][0-9]{2}(?:\.?[0-9X][0-9]?)?$`)
)

// maxCodelistBytes bounds what one codelist file may hold; the largest real
// lists (all of dm+d for a drug class) are a few hundred kilobytes.
const maxCodelistBytes = 16 << 20

// ParseCodelist reads a codelist file. The codelist is named after the file
// (codelists/t2dm.csv is t2dm). The file is UTF-8 CSV:
//
//	# system: snomed-ct
//	# Any other comment lines, e.g. where the list came from.
//	code,term
//	44054006,Diabetes mellitus type 2 (disorder)
//
// Comment lines (starting with #) come first, one of them declaring the code
// system (snomed-ct, dmd or icd-10); then the header `code,term`; then one
// row per code. Codes must be non-empty, unique, and of the system's shape:
// SNOMED CT and dm+d codes are SNOMED CT concept identifiers (6 to 18 digits,
// a concept partition, and a valid Verhoeff check digit); ICD-10 codes are a
// letter and two digits with an optional fourth and fifth character (E11,
// E11.9, E119, I10X). Terms must be non-empty. Every problem is reported,
// as an ErrorList.
func ParseCodelist(file string, src []byte) (*Codelist, error) {
	var errs ErrorList
	at := func(line, col int) Pos { return Pos{File: file, Line: line, Column: col} }
	if len(src) > maxCodelistBytes {
		errs.add(at(0, 0), "", "codelist is %d bytes, more than the limit of %d", len(src), maxCodelistBytes)
		return nil, errs.Err()
	}
	name := strings.TrimSuffix(path.Base(file), ".csv")
	c := &Codelist{Name: name}
	if !codelistNameRE.MatchString(name) {
		errs.add(at(0, 0), "", "codelist name %q must be lowercase letters and digits separated by - or _", name)
	}
	src = bytes.TrimPrefix(src, []byte("\ufeff")) // spreadsheets add a BOM

	// Leading comment lines, read by hand: encoding/csv would drop them.
	line := 0
	rest := src
	for len(rest) > 0 && rest[0] == '#' {
		line++
		text, tail, _ := bytes.Cut(rest, []byte("\n"))
		rest = tail
		k, v, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(string(text), "#")), ":")
		if !ok || strings.TrimSpace(k) != "system" {
			continue
		}
		if c.System != "" {
			errs.add(at(line, 1), "system", "code system declared twice")
			continue
		}
		sys := CodeSystem(strings.TrimSpace(v))
		if !slices.Contains(CodeSystems(), sys) {
			errs.add(at(line, 1), "system", "unknown code system %q (want one of snomed-ct, dmd, icd-10)", sys)
			sys = "?"
		}
		c.System = sys
	}
	if c.System == "" {
		errs.add(at(1, 1), "system", "no code system declared: start the file with a line `# system: snomed-ct` (or dmd, icd-10)")
	}

	r := csv.NewReader(bufio.NewReader(bytes.NewReader(rest)))
	r.FieldsPerRecord = -1 // checked below, to report a clear message with the line
	r.ReuseRecord = false
	header := true
	seen := map[string]int{}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		var perr *csv.ParseError
		if errors.As(err, &perr) {
			errs.add(at(line+perr.Line, perr.Column), "", "%v", perr.Err)
			break
		}
		if err != nil {
			errs.add(at(line, 0), "", "%v", err)
			break
		}
		l, _ := r.FieldPos(0)
		l += line
		if header {
			header = false
			if len(rec) != 2 || rec[0] != "code" || rec[1] != "term" {
				errs.add(at(l, 1), "header", "header is %q, want \"code,term\"", strings.Join(rec, ","))
			}
			continue
		}
		if len(rec) != 2 {
			errs.add(at(l, 1), "", "row has %d fields, want 2 (code,term); quote a term that contains a comma", len(rec))
			continue
		}
		code, term := rec[0], rec[1]
		if msg := checkCode(c.System, code); msg != "" {
			errs.add(at(l, 1), "code", "%s", msg)
			continue
		}
		if strings.TrimSpace(term) == "" {
			errs.add(at(l, len(code)+2), "term", "code %s has no term", code)
		}
		norm := normalizeCode(c.System, code)
		if first, dup := seen[norm]; dup {
			errs.add(at(l, 1), "code", "duplicate code %s (first on line %d)", code, first)
			continue
		}
		seen[norm] = l
		c.codes = append(c.codes, Code{Code: norm, Term: strings.Join(strings.Fields(term), " ")})
	}
	if header {
		errs.add(at(line+1, 1), "header", "missing header \"code,term\"")
	} else if len(c.codes) == 0 && len(errs) == 0 {
		errs.add(at(line+1, 1), "", "codelist has no codes")
	}
	if len(errs) > 0 {
		return nil, errs.Err()
	}
	slices.SortFunc(c.codes, func(a, b Code) int { return strings.Compare(a.Code, b.Code) })
	return c, nil
}

// checkCode returns what is wrong with code as a code of sys, or "".
func checkCode(sys CodeSystem, code string) string {
	if code == "" {
		return "empty code"
	}
	if strings.TrimSpace(code) != code {
		return fmt.Sprintf("code %q has surrounding spaces", code)
	}
	switch sys {
	case SNOMEDCT, DMD:
		if !sctidRE.MatchString(code) {
			return fmt.Sprintf("%q is not a %s code: want 6 to 18 digits", code, sys)
		}
		// The partition identifier (second and third digits from the right)
		// is 00 for a concept, 10 for a concept in an extension such as dm+d.
		if p := code[len(code)-3 : len(code)-1]; p != "00" && p != "10" {
			return fmt.Sprintf("%s is a SNOMED CT identifier but not a concept (partition %s)", code, p)
		}
		if !verhoeffValid(code) {
			return fmt.Sprintf("%s fails the SNOMED CT check digit: a digit is probably mistyped", code)
		}
	case ICD10:
		if !icd10RE.MatchString(code) {
			return fmt.Sprintf("%q is not an ICD-10 code: want e.g. E11, E11.9 or E119", code)
		}
	default:
		return "" // the missing or unknown system is reported once, not per code
	}
	return ""
}

// normalizeCode puts a code in the form codelists hold and nodes compare:
// ICD-10 without the dot, as HES and SUS record it.
func normalizeCode(sys CodeSystem, code string) string {
	if sys == ICD10 {
		return strings.Replace(code, ".", "", 1)
	}
	return code
}

// Verhoeff check digit tables (SNOMED CT identifiers end in one).
var (
	verhoeffD = [10][10]uint8{
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 4, 0, 6, 7, 8, 9, 5},
		{2, 3, 4, 0, 1, 7, 8, 9, 5, 6}, {3, 4, 0, 1, 2, 8, 9, 5, 6, 7},
		{4, 0, 1, 2, 3, 9, 5, 6, 7, 8}, {5, 9, 8, 7, 6, 0, 4, 3, 2, 1},
		{6, 5, 9, 8, 7, 1, 0, 4, 3, 2}, {7, 6, 5, 9, 8, 2, 1, 0, 4, 3},
		{8, 7, 6, 5, 9, 3, 2, 1, 0, 4}, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0},
	}
	verhoeffP = [8][10]uint8{
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 5, 7, 6, 2, 8, 3, 0, 9, 4},
		{5, 8, 0, 3, 7, 9, 6, 1, 4, 2}, {8, 9, 1, 6, 0, 4, 3, 5, 2, 7},
		{9, 4, 5, 3, 1, 2, 6, 8, 7, 0}, {4, 2, 8, 6, 5, 7, 3, 9, 0, 1},
		{2, 7, 9, 3, 8, 0, 6, 4, 1, 5}, {7, 0, 4, 6, 9, 1, 3, 2, 5, 8},
	}
)

// verhoeffValid reports whether the all-digit string s ends in a correct
// Verhoeff check digit.
func verhoeffValid(s string) bool {
	var c uint8
	for i := 0; i < len(s); i++ {
		c = verhoeffD[c][verhoeffP[i%8][s[len(s)-1-i]-'0']]
	}
	return c == 0
}
