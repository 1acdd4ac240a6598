package openai

// These tests read what this package writes with the official OpenAI Go SDK,
// the client our users run, to show the wire format is compatible: first
// by unmarshalling into the SDK's types, then by pointing an SDK client at
// a small server built the way the gateway uses this package.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

func TestSDKReadsChatCompletion(t *testing.T) {
	t.Parallel()
	res := chat.Result{Text: "Hello\n\"world\" <3", FinishReason: chat.FinishLength, PromptTokens: 5, CompletionTokens: 2}
	b, err := json.Marshal(NewChatCompletion(testMeta, res))
	if err != nil {
		t.Fatal(err)
	}
	var c sdk.ChatCompletion
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.ID != testMeta.ID || c.Created != testMeta.Created || c.Model != testMeta.Model || string(c.Object) != "chat.completion" {
		t.Errorf("completion %s", c.RawJSON())
	}
	if len(c.Choices) != 1 {
		t.Fatalf("%d choices", len(c.Choices))
	}
	ch := c.Choices[0]
	if ch.Index != 0 || ch.FinishReason != "length" || string(ch.Message.Role) != "assistant" || ch.Message.Content != res.Text {
		t.Errorf("choice %s", ch.RawJSON())
	}
	if ch.JSON.Logprobs.Valid() {
		t.Errorf("logprobs is %s, want null", ch.JSON.Logprobs.Raw())
	}
	if c.Usage.PromptTokens != 5 || c.Usage.CompletionTokens != 2 || c.Usage.TotalTokens != 7 {
		t.Errorf("usage %s", c.Usage.RawJSON())
	}
}

func TestSDKReadsLogprobs(t *testing.T) {
	t.Parallel()
	lps := []chat.TokenLogprob{{Bytes: []byte("Hi"), Logprob: -0.25, Top: []chat.TopLogprob{{Bytes: []byte("Hi"), Logprob: -0.25}, {Bytes: []byte("Yo"), Logprob: -2}}}}
	b, err := json.Marshal(NewChatCompletion(testMeta, chat.Result{Text: "Hi", Logprobs: lps}))
	if err != nil {
		t.Fatal(err)
	}
	var c sdk.ChatCompletion
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	content := c.Choices[0].Logprobs.Content
	if len(content) != 1 || content[0].Token != "Hi" || content[0].Logprob != -0.25 || len(content[0].Bytes) != 2 ||
		len(content[0].TopLogprobs) != 2 || content[0].TopLogprobs[1].Token != "Yo" || content[0].TopLogprobs[1].Logprob != -2 {
		t.Errorf("logprobs %s", c.Choices[0].Logprobs.RawJSON())
	}

	b, err = json.Marshal(DeltaChunk(testMeta, chat.Delta{Content: "Hi", Logprobs: lps}))
	if err != nil {
		t.Fatal(err)
	}
	var chunk sdk.ChatCompletionChunk
	if err := json.Unmarshal(b, &chunk); err != nil {
		t.Fatal(err)
	}
	if got := chunk.Choices[0].Logprobs.Content; len(got) != 1 || got[0].Token != "Hi" || len(got[0].TopLogprobs) != 2 {
		t.Errorf("chunk logprobs %s", chunk.Choices[0].Logprobs.RawJSON())
	}
}

func TestSDKReadsChunks(t *testing.T) {
	t.Parallel()
	res := chat.Result{FinishReason: chat.FinishStop, PromptTokens: 3, CompletionTokens: 4}
	read := func(c ChatCompletionChunk) sdk.ChatCompletionChunk {
		t.Helper()
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var got sdk.ChatCompletionChunk
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.ID != testMeta.ID || got.Created != testMeta.Created || got.Model != testMeta.Model ||
			string(got.Object) != "chat.completion.chunk" {
			t.Errorf("chunk %s", got.RawJSON())
		}
		return got
	}

	role := read(RoleChunk(testMeta))
	if len(role.Choices) != 1 || role.Choices[0].Delta.Role != "assistant" || !role.Choices[0].Delta.JSON.Content.Valid() ||
		role.Choices[0].JSON.FinishReason.Valid() {
		t.Errorf("role chunk %s", role.RawJSON())
	}
	delta := read(DeltaChunk(testMeta, chat.Delta{Content: "a\nb"}))
	if len(delta.Choices) != 1 || delta.Choices[0].Delta.Content != "a\nb" || delta.Choices[0].Delta.Role != "" {
		t.Errorf("delta chunk %s", delta.RawJSON())
	}
	finish := read(FinishChunk(testMeta, res))
	if len(finish.Choices) != 1 || finish.Choices[0].FinishReason != "stop" || finish.Choices[0].Delta.Content != "" {
		t.Errorf("finish chunk %s", finish.RawJSON())
	}
	usage := read(UsageChunk(testMeta, res))
	if len(usage.Choices) != 0 || !usage.JSON.Choices.Valid() || usage.Usage.TotalTokens != 7 {
		t.Errorf("usage chunk %s", usage.RawJSON())
	}
}

func TestSDKReadsModelList(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(NewModelList(NewModel("tiny", 1700000000, "slm-mesh")))
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Object string      `json:"object"`
		Data   []sdk.Model `json:"data"`
	}
	if err := json.Unmarshal(b, &page); err != nil {
		t.Fatal(err)
	}
	if page.Object != "list" || len(page.Data) != 1 {
		t.Fatalf("list %s", b)
	}
	if m := page.Data[0]; m.ID != "tiny" || string(m.Object) != "model" || m.Created != 1700000000 || m.OwnedBy != "slm-mesh" {
		t.Errorf("model %s", m.RawJSON())
	}
}

// testGateway serves chat completions the way the gateway does, with a fake
// model that answers "echo: " and the last message, word by word. It keeps
// the last decoded request so tests can see what the SDK sent.
type testGateway struct {
	mu   sync.Mutex
	last *ChatCompletionRequest
}

func (g *testGateway) lastRequest() *ChatCompletionRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last
}

func writeError(w http.ResponseWriter, e *Error) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(e)
}

func (g *testGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(NewModelList(NewModel("tiny", 1700000000, "slm-mesh")))
		return
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/models/"):
		if id := strings.TrimPrefix(r.URL.Path, "/v1/models/"); id != "tiny" {
			writeError(w, ModelNotFound(id))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(NewModel("tiny", 1700000000, "slm-mesh"))
		return
	case r.URL.Path != "/v1/chat/completions":
		writeError(w, UnknownRoute(r.Method, r.URL.Path))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, Internal())
		return
	}
	req, e := DecodeChatRequest(body, Limits{MaxMessages: 8, MaxChars: 1000})
	if e != nil {
		writeError(w, e)
		return
	}
	g.mu.Lock()
	g.last = req
	g.mu.Unlock()

	last := req.Messages[len(req.Messages)-1].Content
	if last == "busy" {
		writeError(w, FromError(&chat.Error{Code: chat.CodeOverloaded, Message: "The queue is full."}))
		return
	}
	words := strings.SplitAfter("echo: "+last, " ")
	res := chat.Result{
		Text:             strings.Join(words, ""),
		FinishReason:     chat.FinishStop,
		PromptTokens:     len(req.Messages),
		CompletionTokens: len(words),
	}
	meta := NewCompletionMeta("tiny")
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(NewChatCompletion(meta, res))
		return
	}

	SetStreamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	s := NewStreamWriter(w, w.(http.Flusher).Flush, meta, req.IncludeUsage)
	defer s.Done()
	for _, word := range words {
		if strings.TrimSpace(word) == "fail" {
			s.Error(FromError(&chat.Error{Code: chat.CodeDeadlineExceeded, Message: "engine: context deadline exceeded"}))
			return
		}
		s.Delta(word)
	}
	s.Finish(res)
}

func newSDKClient(t *testing.T) (sdk.Client, *testGateway) {
	t.Helper()
	g := &testGateway{}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	client := sdk.NewClient(
		option.WithBaseURL(srv.URL+"/v1/"),
		option.WithAPIKey("test-key"),
		option.WithMaxRetries(0),
	)
	return client, g
}

func TestSDKClientNew(t *testing.T) {
	t.Parallel()
	client, g := newSDKClient(t)
	c, err := client.Chat.Completions.New(context.Background(), sdk.ChatCompletionNewParams{
		Model: "tiny",
		Messages: []sdk.ChatCompletionMessageParamUnion{
			sdk.DeveloperMessage("Be brief."),
			sdk.UserMessage("hi"),
			sdk.AssistantMessage("hello"),
			sdk.UserMessage([]sdk.ChatCompletionContentPartUnionParam{
				sdk.TextContentPart("how"), sdk.TextContentPart("are you"),
			}),
		},
		MaxCompletionTokens: sdk.Int(16),
		Temperature:         sdk.Float(0.5),
		TopP:                sdk.Float(0.25),
		Seed:                sdk.Int(42),
		PresencePenalty:     sdk.Float(-1),
		FrequencyPenalty:    sdk.Float(1),
		Stop:                sdk.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"\n\n", "END"}},
		N:                   sdk.Int(1),
		User:                sdk.String("u-1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Choices) != 1 || c.Choices[0].Message.Content != "echo: how\nare you" || c.Choices[0].FinishReason != "stop" {
		t.Errorf("completion %s", c.RawJSON())
	}
	if !strings.HasPrefix(c.ID, "chatcmpl-") || c.Model != "tiny" || c.Usage.PromptTokens != 4 {
		t.Errorf("completion %s", c.RawJSON())
	}

	want := &ChatCompletionRequest{Request: chat.Request{
		Model: "tiny",
		Messages: []chat.Message{
			{Role: chat.RoleSystem, Content: "Be brief."},
			{Role: chat.RoleUser, Content: "hi"},
			{Role: chat.RoleAssistant, Content: "hello"},
			{Role: chat.RoleUser, Content: "how\nare you"},
		},
		MaxTokens:        16,
		MaxTokensParam:   "max_completion_tokens",
		Temperature:      ptr[float32](0.5),
		TopP:             ptr[float32](0.25),
		Seed:             ptr[int64](42),
		PresencePenalty:  ptr[float32](-1),
		FrequencyPenalty: ptr[float32](1),
		Stop:             []string{"\n\n", "END"},
	}, User: "u-1"}
	if got := g.lastRequest(); !reflect.DeepEqual(got, want) {
		t.Errorf("the SDK's request decoded to\n%+v\nwant\n%+v", got, want)
	}
}

func TestSDKClientStream(t *testing.T) {
	t.Parallel()
	client, g := newSDKClient(t)
	stream := client.Chat.Completions.NewStreaming(context.Background(), sdk.ChatCompletionNewParams{
		Model:         "tiny",
		Messages:      []sdk.ChatCompletionMessageParamUnion{sdk.UserMessage("the <quick> \"fox\"\n")},
		StreamOptions: sdk.ChatCompletionStreamOptionsParam{IncludeUsage: sdk.Bool(true)},
		Stop:          sdk.ChatCompletionNewParamsStopUnion{OfString: sdk.String("END")},
	})
	var acc sdk.ChatCompletionAccumulator
	var text strings.Builder
	chunks := 0
	for stream.Next() {
		c := stream.Current()
		chunks++
		if !acc.AddChunk(c) {
			t.Fatalf("the SDK's accumulator refused chunk %s", c.RawJSON())
		}
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	const want = "echo: the <quick> \"fox\"\n"
	if text.String() != want {
		t.Errorf("streamed %q, want %q", text.String(), want)
	}
	// role + 4 words + finish + usage
	if chunks != 7 {
		t.Errorf("%d chunks, want 7", chunks)
	}
	if got := acc.Choices[0].Message.Content; got != want {
		t.Errorf("accumulated %q, want %q", got, want)
	}
	if acc.Choices[0].FinishReason != "stop" || acc.Usage.TotalTokens != 1+4 {
		t.Errorf("accumulated %+v", acc.ChatCompletion)
	}
	if r := g.lastRequest(); !r.Stream || !r.IncludeUsage || !reflect.DeepEqual(r.Stop, []string{"END"}) {
		t.Errorf("the SDK's request decoded to %+v", r)
	}
}

func TestSDKClientStreamError(t *testing.T) {
	t.Parallel()
	client, _ := newSDKClient(t)
	stream := client.Chat.Completions.NewStreaming(context.Background(), sdk.ChatCompletionNewParams{
		Model:    "tiny",
		Messages: []sdk.ChatCompletionMessageParamUnion{sdk.UserMessage("please fail now")},
	})
	var text strings.Builder
	for stream.Next() {
		for _, ch := range stream.Current().Choices {
			text.WriteString(ch.Delta.Content)
		}
	}
	err := stream.Err()
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("stream error %v, want the timeout", err)
	}
	if text.String() != "echo: please " {
		t.Errorf("streamed %q before the error", text.String())
	}
}

func TestSDKClientErrors(t *testing.T) {
	t.Parallel()
	client, _ := newSDKClient(t)
	ctx := context.Background()
	hi := []sdk.ChatCompletionMessageParamUnion{sdk.UserMessage("hi")}
	tests := []struct {
		name             string
		params           sdk.ChatCompletionNewParams
		status           int
		typ, param, code string
		retryAfter       string
	}{
		{"tool name", sdk.ChatCompletionNewParams{Model: "tiny", Messages: hi, Tools: []sdk.ChatCompletionToolUnionParam{
			sdk.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get weather"}),
		}}, 400, TypeInvalidRequest, "tools[0].function.name", "", ""},
		{"image", sdk.ChatCompletionNewParams{Model: "tiny", Messages: []sdk.ChatCompletionMessageParamUnion{
			sdk.UserMessage([]sdk.ChatCompletionContentPartUnionParam{
				sdk.ImageContentPart(sdk.ChatCompletionContentPartImageImageURLParam{URL: "https://example.com/a.png"}),
			}),
		}}, 400, TypeInvalidRequest, "messages[0].content[0].type", "", ""},
		{"n", sdk.ChatCompletionNewParams{Model: "tiny", Messages: hi, N: sdk.Int(3)},
			400, TypeInvalidRequest, "n", "", ""},
		{"overloaded", sdk.ChatCompletionNewParams{Model: "tiny", Messages: []sdk.ChatCompletionMessageParamUnion{sdk.UserMessage("busy")}},
			429, TypeRateLimit, "", "rate_limit_exceeded", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := client.Chat.Completions.New(ctx, tt.params)
			var e *sdk.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v, want an *openai.Error", err)
			}
			if e.StatusCode != tt.status || e.Type != tt.typ || e.Param != tt.param || e.Code != tt.code || e.Message == "" {
				t.Errorf("error %d %s", e.StatusCode, e.RawJSON())
			}
			if got := e.Response.Header.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tt.retryAfter)
			}
		})
	}
}

func TestSDKClientModels(t *testing.T) {
	t.Parallel()
	client, _ := newSDKClient(t)
	page, err := client.Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != "tiny" || page.Data[0].OwnedBy != "slm-mesh" {
		t.Errorf("models %s", page.RawJSON())
	}

	m, err := client.Models.Get(context.Background(), "tiny")
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "tiny" || m.Created != 1700000000 || string(m.Object) != "model" || m.OwnedBy != "slm-mesh" {
		t.Errorf("model %s", m.RawJSON())
	}
	_, err = client.Models.Get(context.Background(), "gpt-9")
	var e *sdk.Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusNotFound || e.Code != "model_not_found" {
		t.Errorf("unknown model: %v, want 404 model_not_found", err)
	}
}
