package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/openai/openai-go/v3"

	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// story is a prompt the stories model continues at length: it keeps going
// well past the max_tokens the tests ask for.
const story = "Once upon a time"

// TestStaticMesh runs the chat API, 32 concurrent streams and a client
// disconnect against a mesh whose services know each other's addresses.
func TestStaticMesh(t *testing.T) {
	t.Parallel()
	// A 1024-token context leaves room for a generation long enough to
	// disconnect from midway.
	m := startMesh(t, localmesh.Config{Parallel: 8, Ctx: 1024})
	t.Run("API", func(t *testing.T) { testAPI(t, m) })
	t.Run("ConcurrentStreams", func(t *testing.T) { testConcurrentStreams(t, m) })
	t.Run("DisconnectFreesSlot", func(t *testing.T) { testDisconnectFreesSlot(t, m) })
}

// TestConsulMesh runs the chat API against a mesh whose services register
// in a real Consul agent and find each other through it.
func TestConsulMesh(t *testing.T) {
	t.Parallel()
	m := startMesh(t, localmesh.Config{ConsulBin: consulBinary(t), Parallel: 4})
	t.Run("Registered", func(t *testing.T) {
		client, err := m.Consul().Client()
		if err != nil {
			t.Fatal(err)
		}
		// The caller and the inference are resolved only once their checks
		// pass; the gateway is registered too, but nobody resolves it, and
		// its first check may not have run yet.
		for _, svc := range []struct {
			name    string
			passing bool
		}{{discovery.ServiceInference, true}, {discovery.ServiceCaller, true}, {discovery.ServiceGateway, false}} {
			entries, _, err := client.Health().Service(svc.name, "", svc.passing, nil)
			if err != nil {
				t.Fatalf("consul health of %s: %v", svc.name, err)
			}
			if len(entries) != 1 {
				t.Errorf("%d instances of %s in Consul (passing only: %v), want 1", len(entries), svc.name, svc.passing)
			}
		}
	})
	t.Run("API", func(t *testing.T) { testAPI(t, m) })
}

// testAPI drives the OpenAI API of m with the SDK: chat, streamed and not,
// with every option the issue names, and the gateway's own endpoints.
func testAPI(t *testing.T, m *mesh) {
	t.Run("Chat", func(t *testing.T) {
		const max = 48
		res := m.complete(t, m.greedy(story, max))
		ch := res.Choices[0]
		if ch.Message.Content == "" || string(ch.Message.Role) != "assistant" {
			t.Errorf("message %s", ch.Message.RawJSON())
		}
		if !strings.HasPrefix(res.ID, "chatcmpl-") || string(res.Object) != "chat.completion" || res.Model != m.model || res.Created == 0 {
			t.Errorf("completion %s", res.RawJSON())
		}
		u := res.Usage
		if u.PromptTokens <= 0 || u.CompletionTokens <= 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
			t.Errorf("usage %s", u.RawJSON())
		}
		switch ch.FinishReason {
		case "length":
			if u.CompletionTokens != max {
				t.Errorf("finish_reason length after %d tokens, max %d", u.CompletionTokens, max)
			}
		case "stop":
			if u.CompletionTokens >= max {
				t.Errorf("finish_reason stop after %d tokens, max %d", u.CompletionTokens, max)
			}
		default:
			t.Errorf("finish_reason %q", ch.FinishReason)
		}
	})

	t.Run("PromptCache", func(t *testing.T) {
		// A chat client re-sends the conversation every turn: the second
		// turn finds the first in the inference instance's KV cache and
		// says so as OpenAI does, streamed and not.
		first := m.complete(t, m.greedy("The cat sat on the mat", 16))
		if n := first.Usage.PromptTokensDetails.CachedTokens; n != 0 {
			t.Errorf("first turn: %d cached tokens, want 0", n)
		}
		p := m.greedy("The cat sat on the mat", 16)
		p.Messages = append(p.Messages, sdk.AssistantMessage(first.Choices[0].Message.Content), sdk.UserMessage("What did the cat do next?"))
		second := m.complete(t, p)
		u := second.Usage
		if u.PromptTokensDetails.CachedTokens < first.Usage.PromptTokens-1 || u.PromptTokensDetails.CachedTokens >= u.PromptTokens {
			t.Errorf("second turn usage %s: want at least the first turn's %d prompt tokens cached", u.RawJSON(), first.Usage.PromptTokens)
		}
		p.StreamOptions = sdk.ChatCompletionStreamOptionsParam{IncludeUsage: sdk.Bool(true)}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := m.client()
		s := readStream(c.Chat.Completions.NewStreaming(ctx, p), nil)
		if s.err != nil || s.usage == nil {
			t.Fatalf("stream: %v, usage %v", s.err, s.usage)
		}
		// The same request again: all of its prompt but the last token.
		if n := s.usage.PromptTokensDetails.CachedTokens; n != s.usage.PromptTokens-1 {
			t.Errorf("streamed repeat: usage %s, want %d cached tokens", s.usage.RawJSON(), s.usage.PromptTokens-1)
		}
	})

	t.Run("Stream", func(t *testing.T) {
		const max = 48
		want := m.complete(t, m.greedy(story, max))
		p := m.greedy(story, max)
		p.StreamOptions = sdk.ChatCompletionStreamOptionsParam{IncludeUsage: sdk.Bool(true)}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := m.client()
		s := readStream(c.Chat.Completions.NewStreaming(ctx, p), nil)
		if s.err != nil {
			t.Fatalf("stream: %v (after %q)", s.err, s.text)
		}
		if s.text != want.Choices[0].Message.Content {
			t.Errorf("streamed text %q\nwant the same greedy text as without streaming %q", s.text, want.Choices[0].Message.Content)
		}
		// Text arrives as it is generated, not in one piece at the end.
		if s.contentParts < 2 {
			t.Errorf("the text came in %d chunks", s.contentParts)
		}
		if len(s.ids) != 1 || s.role != "assistant" {
			t.Errorf("chunk ids %v, first role %q", s.ids, s.role)
		}
		for id := range s.ids {
			if !strings.HasPrefix(id, "chatcmpl-") {
				t.Errorf("chunk id %q", id)
			}
		}
		if s.finishChunks != 1 || s.finish != want.Choices[0].FinishReason {
			t.Errorf("%d finish chunks, finish_reason %q, want one with %q", s.finishChunks, s.finish, want.Choices[0].FinishReason)
		}
		if s.usage == nil {
			t.Fatal("no usage chunk although include_usage was set")
		}
		if s.usage.PromptTokens != want.Usage.PromptTokens || s.usage.CompletionTokens != want.Usage.CompletionTokens ||
			s.usage.TotalTokens != s.usage.PromptTokens+s.usage.CompletionTokens {
			t.Errorf("streamed usage %s, non-streamed %s", s.usage.RawJSON(), want.Usage.RawJSON())
		}
	})

	t.Run("StructuredOutput", func(t *testing.T) { testStructuredOutput(t, m) })
	t.Run("Logprobs", func(t *testing.T) { testLogprobs(t, m) })

	t.Run("Stop", func(t *testing.T) {
		const max = 48
		full := m.complete(t, m.greedy(story, max)).Choices[0].Message.Content
		// A word from the middle of the greedy text: the text with the stop
		// string is the greedy text up to its first occurrence.
		words := strings.Fields(full)
		if len(words) < 6 {
			t.Fatalf("greedy text %q too short to pick a stop string from", full)
		}
		stop := words[len(words)/2]
		cut := strings.Index(full, stop)
		if cut <= 0 {
			t.Fatalf("stop %q at %d in %q", stop, cut, full)
		}
		want := full[:cut]

		p := m.greedy(story, max)
		p.Stop = sdk.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"no such text", stop}}
		res := m.complete(t, p)
		if got := res.Choices[0].Message.Content; got != want || res.Choices[0].FinishReason != "stop" {
			t.Errorf("with stop %q: %q, finish_reason %q\nwant %q, finish_reason stop", stop, got, res.Choices[0].FinishReason, want)
		}
		if res.Usage.CompletionTokens >= max {
			t.Errorf("stopped after %d tokens, max %d", res.Usage.CompletionTokens, max)
		}

		p.Stop = sdk.ChatCompletionNewParamsStopUnion{OfString: sdk.String(stop)}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := m.client()
		s := readStream(c.Chat.Completions.NewStreaming(ctx, p), nil)
		if s.err != nil || s.text != want || s.finish != "stop" {
			t.Errorf("streamed with stop %q: %q, finish_reason %q, error %v\nwant %q, finish_reason stop", stop, s.text, s.finish, s.err, want)
		}
		if s.usage != nil {
			t.Errorf("a usage chunk although include_usage was not set: %+v", s.usage)
		}
	})

	t.Run("Seed", func(t *testing.T) {
		sampled := func(seed int64) string {
			p := m.greedy(story, 40)
			p.Temperature = sdk.Float(1)
			p.Seed = sdk.Int(seed)
			return m.complete(t, p).Choices[0].Message.Content
		}
		a, b := sampled(1234), sampled(1234)
		if a == "" || a != b {
			t.Errorf("seed 1234 gave\n%q\nthen\n%q", a, b)
		}
		// Temperature 1 samples: other seeds tell different stories (if
		// they did not, the check above would prove nothing).
		if c, d := sampled(1), sampled(2); c == a && d == a {
			t.Errorf("seeds 1, 2 and 1234 all gave %q", a)
		}
	})

	t.Run("MaxCompletionTokens", func(t *testing.T) {
		for _, max := range []int64{1, 7} {
			res := m.complete(t, m.greedy(story, max))
			if res.Choices[0].FinishReason != "length" || res.Usage.CompletionTokens != max {
				t.Errorf("max_completion_tokens %d: finish_reason %q, completion_tokens %d", max, res.Choices[0].FinishReason, res.Usage.CompletionTokens)
			}
		}
		// The older max_tokens does the same.
		p := sdk.ChatCompletionNewParams{
			Model:       m.model,
			Messages:    []sdk.ChatCompletionMessageParamUnion{sdk.UserMessage(story)},
			MaxTokens:   sdk.Int(5),
			Temperature: sdk.Float(0),
		}
		res := m.complete(t, p)
		if res.Choices[0].FinishReason != "length" || res.Usage.CompletionTokens != 5 {
			t.Errorf("max_tokens 5: finish_reason %q, completion_tokens %d", res.Choices[0].FinishReason, res.Usage.CompletionTokens)
		}
	})

	t.Run("Health", func(t *testing.T) {
		resp, body := m.request(t, http.MethodGet, "/health", "", nil)
		var h healthReport
		if err := json.Unmarshal(body, &h); err != nil {
			t.Fatalf("/health %q: %v", body, err)
		}
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
			h.Status != "ok" || !slices.Contains(h.Models, m.model) || h.liveInstances() != 1 {
			t.Errorf("/health: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	})

	t.Run("Models", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := m.client()
		page, err := c.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Data) != 1 || page.Data[0].ID != m.model || string(page.Data[0].Object) != "model" {
			t.Errorf("models %s, want just %s", page.RawJSON(), m.model)
		}
		// created is the model file's time, as the inference service
		// found it.
		fi, err := os.Stat(modeltest.Stories(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Data) == 1 && page.Data[0].Created != fi.ModTime().Unix() {
			t.Errorf("created %d, want the model file's time %d", page.Data[0].Created, fi.ModTime().Unix())
		}
		one, err := c.Models.Get(ctx, m.model)
		if err != nil {
			t.Fatal(err)
		}
		if one.ID != m.model || one.Created != fi.ModTime().Unix() || one.OwnedBy != "slm-mesh" {
			t.Errorf("models.retrieve: %s", one.RawJSON())
		}
		_, err = c.Models.Get(ctx, "gpt-nothing")
		var e *sdk.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusNotFound || e.Code != "model_not_found" {
			t.Errorf("models.retrieve of an unknown model: %v", err)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		gw := m.Addr("gateway")
		const chatOK = `route="/v1/chat/completions"`
		before := scrape(t, gw)
		for _, name := range []string{
			"slm_http_requests_total", "slm_http_request_duration_seconds_count", "slm_time_to_first_token_seconds_count",
			"slm_prompt_tokens_total", "slm_generation_tokens_total", "slm_requests_running",
		} {
			if !before.has(name) {
				t.Errorf("/metrics has no %s", name)
			}
		}

		a := m.complete(t, m.greedy(story, 9))
		p := m.greedy(story, 11)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := m.client()
		if s := readStream(c.Chat.Completions.NewStreaming(ctx, p), nil); s.err != nil {
			t.Fatal(s.err)
		}
		prompt := float64(2 * a.Usage.PromptTokens) // same prompt twice
		completion := float64(9 + 11)

		// The request counter is updated after the response is written, so
		// the client may see the response a moment earlier.
		var after metrics
		ok := eventually(5*time.Second, 50*time.Millisecond, func() bool {
			after = scrape(t, gw)
			return after.sum("slm_http_requests_total", chatOK, `status="200"`)-before.sum("slm_http_requests_total", chatOK, `status="200"`) >= 2
		})
		if !ok {
			t.Errorf("slm_http_requests_total{%s,status=\"200\"} went from %v to %v after two requests", chatOK,
				before.sum("slm_http_requests_total", chatOK, `status="200"`), after.sum("slm_http_requests_total", chatOK, `status="200"`))
		}
		delta := func(name string) float64 { return after.sum(name) - before.sum(name) }
		if d := delta("slm_time_to_first_token_seconds_count"); d != 2 {
			t.Errorf("slm_time_to_first_token_seconds_count grew by %v after two requests", d)
		}
		if d := delta("slm_prompt_tokens_total"); d != prompt {
			t.Errorf("slm_prompt_tokens_total grew by %v, the requests had %v prompt tokens", d, prompt)
		}
		if d := delta("slm_generation_tokens_total"); d != completion {
			t.Errorf("slm_generation_tokens_total grew by %v, the requests had %v completion tokens", d, completion)
		}
		if after.sum("slm_http_requests_total", `route="/health"`) == 0 {
			t.Errorf("no /health requests counted, yet the mesh was started by polling /health")
		}
	})
}
