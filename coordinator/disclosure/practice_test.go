package disclosure

import (
	"context"
	"fmt"
	"testing"
)

// TestPracticeTables runs the property checks on small versions of the
// benchmark's national table, where lines are long and components large.
func TestPracticeTables(t *testing.T) {
	for _, tc := range []struct {
		practices int
		scale     float64
	}{{6, 1}, {6, 4}, {20, 1}} {
		t.Run(fmt.Sprintf("%d practices scale %v", tc.practices, tc.scale), func(t *testing.T) {
			if tc.practices > 6 && testing.Short() {
				t.Skip("slow brute-force check")
			}
			table := practiceTable(tc.practices, tc.scale)
			r, err := Apply(context.Background(), table, DefaultThresholds())
			if err != nil {
				t.Fatal(err)
			}
			if err := checkReleased(genTable{table, DefaultThresholds()}, r); err != nil {
				t.Fatal(err)
			}
			for j := range r.Measures {
				if det := derivable(r, j); len(det) > 0 {
					t.Errorf("derivable: %v", det)
				}
			}
			t.Logf("%d cells, withheld %v", len(r.Cells), r.WithheldCounts())
		})
	}
}
