package connector

import (
	"errors"
	"fmt"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/internal/arrowsafe"
)

// The host reads Arrow from a process it does not trust. The Arrow reader
// was written for honest peers, so every message is verified before the
// reader sees it (streamSource), every read is guarded, every allocation
// is capped by the bytes the stream may carry, and every record is
// validated before the caller sees it; internal/arrowsafe does each.

// guard runs f, turning a panic into an error: the capped allocator's
// refusal into a *LimitError, anything else into ErrMalformedResult.
func guard(f func() error) error {
	err := arrowsafe.Guard(f)
	// The Arrow reader recovers the allocator's panic itself and wraps
	// it, so look for it along the chain.
	if ae, ok := errors.AsType[*arrowsafe.AllocError](err); ok {
		return &LimitError{Limit: LimitBytes, Max: ae.Max}
	}
	if pe, ok := errors.AsType[*arrowsafe.PanicError](err); ok {
		return fmt.Errorf("%w: reading the Arrow stream failed: %v", ErrMalformedResult, pe.Value)
	}
	return err
}

// newAllocator returns the allocator a result's reader uses: it refuses
// any one allocation larger than the byte limit. streamSource has already
// checked each message's lengths against what the limit still allows;
// this is the second line, for lengths inside a message, where a lie
// would otherwise only exhaust memory.
func newAllocator(maxBytes int64) memory.Allocator {
	return arrowsafe.NewCappedAllocator(maxBytes)
}

// resultType reports whether t is one of the types a connector returns.
func resultType(t arrow.DataType) bool {
	switch t.ID() {
	case arrow.INT64, arrow.FLOAT64, arrow.BOOL, arrow.DATE32, arrow.STRING, arrow.BINARY:
		return true
	case arrow.LIST:
		switch t.(*arrow.ListType).Elem().ID() {
		case arrow.STRING, arrow.INT64:
			return true
		}
	}
	return false
}

// ResultTypes names the Arrow types a connector's result columns may have.
const ResultTypes = "int64, float64, bool, date32, utf8, binary, list<utf8> and list<int64>"

// checkResultSchema checks that every column has a result type.
func checkResultSchema(s *arrow.Schema) error {
	for i, f := range s.Fields() {
		if !resultType(f.Type) {
			return fmt.Errorf("column %d %q has Arrow type %s; connectors return only %s", i+1, f.Name, f.Type, ResultTypes)
		}
	}
	return nil
}

// compareSchemas explains how got differs from want in names or types.
func compareSchemas(got, want *arrow.Schema) error {
	var diffs []string
	if got.NumFields() != want.NumFields() {
		diffs = append(diffs, fmt.Sprintf("%d columns, want %d", got.NumFields(), want.NumFields()))
	}
	for i := range min(got.NumFields(), want.NumFields()) {
		g, w := got.Field(i), want.Field(i)
		if g.Name != w.Name || !arrow.TypeEqual(g.Type, w.Type) {
			diffs = append(diffs, fmt.Sprintf("column %d is %q %s, want %q %s", i+1, g.Name, g.Type, w.Name, w.Type))
		}
	}
	if len(diffs) > 0 {
		return errors.New(strings.Join(diffs, "; "))
	}
	return nil
}

// validateRecord checks what the Arrow reader does not (see
// arrowsafe.ValidateRecord), so that reading any value cannot go out of
// bounds.
func validateRecord(rec arrow.Record) error {
	if err := arrowsafe.ValidateRecord(rec); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformedResult, err)
	}
	return nil
}
