package coordinator_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/havenhealth/haven/coordinator/coordinatortest"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// BenchmarkSubmissions submits 1,000 runs from 50 principals in 10
// organisations (20 each, all 50 at once) to a real coordinator over
// loopback with mutual TLS, and reports submissions per second and the
// 99th percentile SubmitRun latency. No site is connected, so each run is
// authenticated, bounded, counted, decided by haven/submit, stored and
// audited, and then fails at planning: the benchmark measures admission,
// not dispatch. Run it with
// -benchtime=1x: each iteration is a fresh coordinator, so the day's rate
// limits start from zero. The bundle's release-ledger rules are off: every
// principal asks the same question, which the near-duplicate rule would
// refuse after the first; BenchmarkSubmitWithLedger in policy measures
// what the ledger adds to a decision.
func BenchmarkSubmissions(b *testing.B) {
	const principals, each = 50, 20
	for b.Loop() {
		b.StopTimer()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		n := coordinatortest.New(b, coordinatortest.Options{Deadline: 10 * time.Minute,
			EditData: func(data map[string]any) { delete(data, "ledger") }})
		conns := make([]*grpc.ClientConn, principals)
		for i := range conns {
			cert, key := n.UserCert(fmt.Sprintf("user-%02d", i), fmt.Sprintf("ORG%02d", i%10), "analyst")
			conns[i] = n.Dial(cert, key)
		}
		lat := make([]time.Duration, 0, principals*each)
		var mu sync.Mutex
		var wg sync.WaitGroup
		b.StartTimer()
		start := time.Now()
		for _, conn := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := havenv1.NewCoordinatorClient(conn)
				for range each {
					t0 := time.Now()
					resp, err := c.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: "statins-chd", Purpose: purpose})
					d := time.Since(t0)
					if err != nil || resp.GetRun().GetState() == havenv1.RunState_RUN_STATE_REFUSED {
						b.Errorf("submission: %v %v", resp.GetRun().GetPolicyReasons(), err)
						return
					}
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		b.StopTimer()
		slices.Sort(lat)
		if len(lat) > 0 {
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "submissions/s")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		}
		if err := n.Stop(); err != nil {
			b.Error(err)
		}
		cancel()
		b.StartTimer()
	}
}
