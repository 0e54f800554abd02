package register

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/havenhealth/haven/coordinator/store"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// BenchmarkRegister10k serves the register's first page and its two feeds
// with 10,000 runs in the real job store (issue 16's budget for the first
// page: 50 ms).
func BenchmarkRegister10k(b *testing.B) {
	ctx := context.Background()
	s, err := store.OpenSQLite(ctx, filepath.Join(b.TempDir(), "coordinator.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	states := []havenv1.RunState{havenv1.RunState_RUN_STATE_RELEASED, havenv1.RunState_RUN_STATE_REFUSED,
		havenv1.RunState_RUN_STATE_FAILED, havenv1.RunState_RUN_STATE_CANCELLED}
	for i := range 10_000 {
		r := run(fmt.Sprintf("run-B%05d", i), fmt.Sprintf("Q%02d", i%42), "analyst@example", states[i%len(states)], i)
		if r.State == havenv1.RunState_RUN_STATE_REFUSED {
			r.PolicyReasons = []*havenv1.PolicyReason{{Code: "near_duplicate", Message: "too close to an earlier run"}}
		}
		if err := s.CreateRun(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	reg, err := New(Config{Store: s, Head: func() (uint64, string) { return 10_000, strings.Repeat("c", 64) }})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ name, path string }{
		{"first-page", "/register/"}, {"json-feed", "/register/runs.json"}, {"atom-feed", "/register/runs.atom"},
	} {
		path := c.path
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				reg.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
				if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "run-B09999") {
					b.Fatalf("%s: status %d", path, w.Code)
				}
			}
		})
	}
}
