package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
)

// TestQueueWaitBound: an inference instance started with -max-queue-wait
// refuses a request that would wait for a slot longer than that, though its
// queue has room, and the client gets a 429 with Retry-After saying why.
// The bound here is 1ns: once a request has held the only slot, any wait is
// too long.
func TestQueueWaitBound(t *testing.T) {
	m := startMesh(t, localmesh.Config{Parallel: 1, Queue: 8,
		ExtraArgs: map[string][]string{"inference": {"-max-queue-wait=1ns"}}})
	m.complete(t, m.greedy("Once", 8)) // a measure of how long a slot is held

	// A long stream keeps the only slot busy until the test ends.
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	c := m.client()
	wg.Go(func() {
		readStream(c.Chat.Completions.NewStreaming(ctx, m.greedy("Once", 500)), func(string) bool {
			once.Do(func() { close(started) })
			return true
		})
	})
	select {
	case <-started:
	case <-time.After(time.Minute):
		t.Fatal("the long stream never started")
	}

	body := `{"messages":[{"role":"user","content":"Once"}],"max_tokens":4,"temperature":0}`
	resp, b := m.request(t, http.MethodPost, "/v1/chat/completions", body, nil)
	var e apiError
	_ = json.Unmarshal(b, &e)
	retry, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || e.Error.Type != "rate_limit_error" || err != nil || retry < 1 || retry > 60 {
		t.Fatalf("%d, Retry-After %q: %s; want 429 rate_limit_error with Retry-After 1-60",
			resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	if !strings.Contains(e.Error.Message, "past the 1ns limit") {
		t.Errorf("message %q does not say the wait bound refused it", e.Error.Message)
	}
}
