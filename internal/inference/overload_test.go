package inference

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/engine"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// TestOverloadedCarriesRetryAfter: a request the engine refuses because the
// wait for a slot would be too long reaches the RPC caller as
// CodeOverloaded with the engine's RetryAfter (which the gateway turns into
// Retry-After). Real engine on stories260K, real RPC over loopback.
func TestOverloadedCarriesRetryAfter(t *testing.T) {
	eng, err := engine.Open(engine.Config{
		ModelPath: modeltest.Stories(t), Threads: 1, Parallel: 1, ContextPerSeq: 512,
		QueueSize: 8, MaxQueueWait: time.Nanosecond, // any wait is too long
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	srv := New(Config{})
	srv.SetEngine(eng)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	ctx := context.Background()
	conn, err := rpc.Dial(ctx, strings.TrimPrefix(hs.URL, "http://"), rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := mesh.NewInferenceClient(conn)

	req := func(maxTokens int) chat.Request {
		return chat.Request{Messages: []chat.Message{{Role: chat.RoleUser, Content: "Once"}}, MaxTokens: maxTokens}
	}
	// One finished request gives the engine a measure of how long a slot is
	// held; a long one then keeps the only slot busy.
	if _, err := c.RunInference(ctx, req(8), nil); err != nil {
		t.Fatal(err)
	}
	busy, cancel := context.WithCancel(ctx)
	started := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.RunInference(busy, req(500), func(chat.Delta) error {
			once.Do(func() { close(started) })
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the long generation never started")
	}

	_, err = c.RunInference(ctx, req(4), nil)
	var re *chat.Error
	if !errors.As(err, &re) || re.Code != chat.CodeOverloaded {
		t.Fatalf("got %v, want %s", err, chat.CodeOverloaded)
	}
	if re.RetryAfter < time.Second || re.RetryAfter > time.Minute {
		t.Fatalf("RetryAfter %v, want within [1s, 1m]", re.RetryAfter)
	}
}
