package inference

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/engine"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/mesh/meshtest"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// The inference server on loopback, called as the caller calls it
// (mesh.InferenceClient over an rpc.Pool), with the real engine on
// stories260K where a model is needed.

// startInference serves s and returns a client for it and its address.
func startInference(t *testing.T, s *Server) (*mesh.InferenceClient, string) {
	t.Helper()
	addr := meshtest.Serve(t, s)
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = s.Shutdown(ctx)
	})
	return mesh.NewInferenceClient(meshtest.Pool(t, discovery.ServiceInference, rpc.PoolConfig{}, addr)), addr
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func wantRPCError(t *testing.T, err error, code chat.ErrorCode, param, reason string) *chat.Error {
	t.Helper()
	var re *chat.Error
	if !errors.As(err, &re) || re.Code != code || re.Param != param || re.Reason != reason {
		t.Fatalf("got %#v, want %s param %q reason %q", err, code, param, reason)
	}
	return re
}

// TestLoading proves an instance without its model is unavailable (so
// that a caller's pool tries another) and says so on /health.
func TestLoading(t *testing.T) {
	t.Parallel()
	c, addr := startInference(t, New(Config{}))
	_, err := c.Info(testCtx(t))
	wantRPCError(t, err, chat.CodeUnavailable, "", "")
	_, err = c.RunInference(testCtx(t), chat.Request{Messages: []chat.Message{{Role: chat.RoleUser, Content: "hi"}}}, nil)
	wantRPCError(t, err, chat.CodeUnavailable, "", "")
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/health %d while loading, want 503", resp.StatusCode)
	}
}

// TestServe runs requests through the server into the real engine.
func TestServe(t *testing.T) {
	t.Parallel()
	const ctxLen = 256
	eng, err := engine.Open(engine.Config{ModelPath: modeltest.Stories(t), ContextPerSeq: ctxLen, Parallel: 2, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	s := New(Config{})
	s.SetEngine(eng)
	c, addr := startInference(t, s)
	zero := float32(0)
	user := func(text string) []chat.Message { return []chat.Message{{Role: chat.RoleUser, Content: text}} }

	t.Run("Info", func(t *testing.T) {
		info, err := c.Info(testCtx(t))
		if err != nil || info.Model != eng.Name() || info.Slots != 2 || info.ContextPerSeq != ctxLen {
			t.Errorf("%+v %v", info, err)
		}
		if st := c.Infos(testCtx(t)); len(st) != 1 || st[0].Model != eng.Name() || st[0].Error != "" {
			t.Errorf("Infos %+v", st)
		}
	})
	t.Run("Generate", func(t *testing.T) {
		var text strings.Builder
		res, err := c.RunInference(testCtx(t), chat.Request{Messages: user("Once upon a time"), MaxTokens: 8, Temperature: &zero},
			func(d chat.Delta) error { text.WriteString(d.Content); return nil })
		if err != nil || text.Len() == 0 || res.CompletionTokens != 8 || res.FinishReason != chat.FinishLength || res.Model != eng.Name() {
			t.Errorf("%q %+v %v", text.String(), res, err)
		}
	})
	t.Run("PromptCache", func(t *testing.T) {
		// The second turn re-sends the first: its prompt is found in the
		// slot the first left, reported as cached and counted.
		conv := user("The little dog ran to the park")
		first, err := c.RunInference(testCtx(t), chat.Request{Messages: conv, MaxTokens: 4, Temperature: &zero}, nil)
		if err != nil {
			t.Fatal(err)
		}
		conv = append(conv, chat.Message{Role: chat.RoleAssistant, Content: first.Text}, chat.Message{Role: chat.RoleUser, Content: "and then"})
		second, err := c.RunInference(testCtx(t), chat.Request{Messages: conv, MaxTokens: 4, Temperature: &zero}, nil)
		if err != nil || second.CachedTokens < first.PromptTokens-1 || second.CachedTokens >= second.PromptTokens {
			t.Fatalf("second turn %+v %v: want at least the first turn's %d prompt tokens cached", second, err, first.PromptTokens)
		}
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		mf, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		cached, prompt := mf["slm_inference_prompt_tokens_cached_total"], mf["slm_inference_prompt_tokens_total"]
		if cached == nil || prompt == nil {
			t.Fatalf("/metrics lacks the prompt token counters")
		}
		if c, p := cached.Metric[0].GetCounter().GetValue(), prompt.Metric[0].GetCounter().GetValue(); c < float64(second.CachedTokens) || c >= p {
			t.Errorf("/metrics: %v of %v prompt tokens cached, want at least %d", c, p, second.CachedTokens)
		}
	})
	t.Run("ModelMismatch", func(t *testing.T) {
		_, err := c.RunInference(testCtx(t), chat.Request{Model: "gpt-nothing", Messages: user("hi")}, nil)
		wantRPCError(t, err, chat.CodeNotFound, "model", "")
	})
	t.Run("Invalid", func(t *testing.T) {
		// Not through a caller: the engine applies chat.Request.Validate
		// itself.
		hot := float32(3)
		_, err := c.RunInference(testCtx(t), chat.Request{Messages: user("hi"), Temperature: &hot}, nil)
		wantRPCError(t, err, chat.CodeInvalidArgument, "temperature", "")
	})
	t.Run("ContextOverflow", func(t *testing.T) {
		long := strings.Repeat("Once upon a time there was a girl. ", 100)
		_, err := c.RunInference(testCtx(t), chat.Request{Messages: user(long)}, nil)
		wantRPCError(t, err, chat.CodeInvalidArgument, "messages", chat.ReasonContextLength)
		_, err = c.RunInference(testCtx(t), chat.Request{Messages: user("hi"), MaxTokens: ctxLen}, nil)
		re := wantRPCError(t, err, chat.CodeInvalidArgument, "messages", chat.ReasonContextLength)
		if !strings.Contains(re.Message, "max_tokens") {
			t.Errorf("message %q does not name max_tokens", re.Message)
		}
	})
	t.Run("LongPromptWithoutMaxTokens", func(t *testing.T) {
		// The engine's default (512) is more than the context leaves: the
		// answer is shortened to fit instead of refused.
		prompt := strings.Repeat("Once upon a time there was a girl. ", 20)
		res, err := c.RunInference(testCtx(t), chat.Request{Messages: user(prompt), Temperature: &zero}, nil)
		if err != nil || res.PromptTokens < ctxLen/2 || res.PromptTokens+res.CompletionTokens > ctxLen || res.CompletionTokens == 0 {
			t.Errorf("%+v %v: want a completion that fills at most the %d tokens the prompt leaves", res, err, ctxLen-res.PromptTokens)
		}
	})
}
