package caller

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/mesh/meshtest"
)

// BenchmarkModelRouting is the caller's routing cost with several models
// against one: a request through a real caller over loopback RPC to
// in-process inference instances that answer at once, so that what is
// measured is the mesh's own work. "one-model" has two instances of one
// model; "two-models" two instances of each of two models, the requests
// alternating between them. It reports the median (p50-ms) beside the
// mean.
//
//	go test -run '^$' -bench ModelRouting -benchtime 2000x ./internal/caller
func BenchmarkModelRouting(b *testing.B) {
	for _, models := range []int{1, 2} {
		b.Run(map[int]string{1: "one-model", 2: "two-models"}[models], func(b *testing.B) {
			var addrs, names []string
			for m := range models {
				name := fmt.Sprintf("model-%d", m)
				names = append(names, name)
				for range 2 {
					addrs = append(addrs, (&meshtest.Inference{Model: name}).Serve(b))
				}
			}
			s := newCaller(b, Config{}, addrs...)
			c := client(b, meshtest.Serve(b, s))
			waitDescribed(b, s, len(addrs))
			ctx := b.Context()
			took := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				req := chat.Request{Model: names[i%models], Messages: []chat.Message{{Role: chat.RoleUser, Content: fmt.Sprintf("story %d", i%64)}}}
				start := time.Now()
				if _, err := c.GetResponse(ctx, req, nil); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
		})
	}
}
