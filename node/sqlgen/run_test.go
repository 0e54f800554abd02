package sqlgen

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/havenhealth/haven/policy/catalog"
	"github.com/havenhealth/haven/synth"
)

// sites caches each site's raw rows, read once per test binary.
var sites struct {
	mu   sync.Mutex
	data map[string]*siteData
}

func siteRows(t testing.TB, n *synth.Network, s synth.Site) *siteData {
	t.Helper()
	sites.mu.Lock()
	defer sites.mu.Unlock()
	if sd, ok := sites.data[s.ODS]; ok {
		return sd
	}
	if sites.data == nil {
		sites.data = map[string]*siteData{}
	}
	sd := readSite(t, n, s)
	sites.data[s.ODS] = sd
	return sd
}

// query runs st and returns its rows with values normalised to string,
// int64, float64, bool, nil and []int64.
func query(ctx context.Context, db *sql.DB, st Statement) ([][]any, error) {
	rows, err := db.QueryContext(ctx, st.SQL, st.Args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", st.Name, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if len(cols) != len(st.Columns) {
		return nil, fmt.Errorf("%s: %d columns, the statement declares %d", st.Name, len(cols), len(st.Columns))
	}
	for i, c := range cols {
		if c != st.Columns[i].Name {
			return nil, fmt.Errorf("%s: column %d is %q, the statement declares %q", st.Name, i, c, st.Columns[i].Name)
		}
	}
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		for i, v := range vals {
			if s, ok := v.(string); ok && st.Columns[i].Type == catalog.FieldDays {
				v, err = parseIntArray(s) // pgx gives arrays to database/sql as text
				if err != nil {
					return nil, fmt.Errorf("%s: column %s: %w", st.Name, cols[i], err)
				}
			}
			if s, ok := v.(string); ok && st.Columns[i].Type == FieldStrings {
				v, err = parseTextArray(s)
				if err != nil {
					return nil, fmt.Errorf("%s: column %s: %w", st.Name, cols[i], err)
				}
			}
			if vals[i], err = normalise(v); err != nil {
				return nil, fmt.Errorf("%s: column %s: %w", st.Name, cols[i], err)
			}
		}
		out = append(out, vals)
	}
	return out, rows.Err()
}

// parseIntArray reads a PostgreSQL array literal of integers, {1,2,3}.
func parseIntArray(s string) ([]int64, error) {
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, fmt.Errorf("not an array: %q", s)
	}
	out := []int64{}
	if s == "{}" {
		return out, nil
	}
	for _, x := range strings.Split(s[1:len(s)-1], ",") {
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("array element %q: %w", x, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseTextArray reads a PostgreSQL array literal of strings that need no
// quoting, such as NHS numbers: {a,b,c}.
func parseTextArray(s string) ([]string, error) {
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, fmt.Errorf("not an array: %q", s)
	}
	if s == "{}" {
		return []string{}, nil
	}
	out := strings.Split(s[1:len(s)-1], ",")
	for _, x := range out {
		if strings.ContainsAny(x, `"\{}`) {
			return nil, fmt.Errorf("array element %q needs unquoting", x)
		}
	}
	return out, nil
}

func normalise(v any) (any, error) {
	switch v := v.(type) {
	case nil, string, int64, float64, bool, []string:
		return v, nil
	case int32:
		return int64(v), nil
	case []any:
		if len(v) > 0 {
			if _, ok := v[0].(string); ok {
				out := make([]string, len(v))
				for i, x := range v {
					if out[i], ok = x.(string); !ok {
						return nil, fmt.Errorf("list element of type %T among strings", x)
					}
				}
				return out, nil
			}
		}
		out := []int64{}
		for _, x := range v {
			n, err := normalise(x)
			if err != nil {
				return nil, err
			}
			i, ok := n.(int64)
			if !ok {
				return nil, fmt.Errorf("list element of type %T", x)
			}
			out = append(out, i)
		}
		return out, nil
	case []int64:
		return v, nil
	case []int32:
		out := []int64{}
		for _, x := range v {
			out = append(out, int64(x))
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected value of type %T", v)
}
