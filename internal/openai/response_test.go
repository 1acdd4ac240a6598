package openai

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

var testMeta = CompletionMeta{ID: "chatcmpl-test", Created: 1700000000, Model: "tiny"}

func TestNewCompletionID(t *testing.T) {
	t.Parallel()
	valid := regexp.MustCompile(`^chatcmpl-[A-Za-z0-9]{20,}$`)
	seen := map[string]bool{}
	for range 100 {
		id := NewCompletionID()
		if !valid.MatchString(id) {
			t.Fatalf("id %q has the wrong form", id)
		}
		if seen[id] {
			t.Fatalf("id %q repeated", id)
		}
		seen[id] = true
	}
}

func TestNewCompletionMeta(t *testing.T) {
	t.Parallel()
	before := time.Now().Unix()
	m := NewCompletionMeta("tiny")
	if m.Model != "tiny" || m.ID == "" || m.Created < before || m.Created > time.Now().Unix() {
		t.Errorf("meta %+v", m)
	}
}

func TestChatCompletionJSON(t *testing.T) {
	t.Parallel()
	res := chat.Result{Text: "Hi <b>&</b>\n", FinishReason: chat.FinishLength, PromptTokens: 7, CompletionTokens: 3, CachedTokens: 4, Model: "other"}
	got, err := json.Marshal(NewChatCompletion(testMeta, res))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"chatcmpl-test","object":"chat.completion","created":1700000000,"model":"tiny",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"Hi \u003cb\u003e\u0026\u003c/b\u003e\n"},` +
		`"finish_reason":"length","logprobs":null}],` +
		`"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":4}}}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestChatCompletionLogprobs checks that logprobs asked for are an object
// whose content is [] even without tokens, and null when not asked for.
func TestChatCompletionLogprobs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		lps  []chat.TokenLogprob
		want string
	}{
		{nil, `"logprobs":null`},
		{[]chat.TokenLogprob{}, `"logprobs":{"content":[],"refusal":null}`},
		{[]chat.TokenLogprob{{Bytes: []byte("Hi"), Logprob: -0.125}},
			`"logprobs":{"content":[{"token":"Hi","logprob":-0.125,"bytes":[72,105],"top_logprobs":[]}],"refusal":null}`},
	} {
		got, err := json.Marshal(NewChatCompletion(testMeta, chat.Result{Logprobs: tc.lps}))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(got), tc.want) {
			t.Errorf("logprobs %v: got %s, want it to hold %s", tc.lps, got, tc.want)
		}
	}
}

func TestNewChatCompletionDefaults(t *testing.T) {
	t.Parallel()
	// Without a model in meta the result's is used; an empty finish reason
	// is "stop".
	c := NewChatCompletion(CompletionMeta{ID: "x"}, chat.Result{Model: "served"})
	if c.Model != "served" || c.Choices[0].FinishReason != chat.FinishStop {
		t.Errorf("got model %q finish %q", c.Model, c.Choices[0].FinishReason)
	}
}

func TestChunksJSON(t *testing.T) {
	t.Parallel()
	res := chat.Result{FinishReason: chat.FinishStop, PromptTokens: 2, CompletionTokens: 1}
	head := `{"id":"chatcmpl-test","object":"chat.completion.chunk","created":1700000000,"model":"tiny",`
	tests := []struct {
		name  string
		chunk ChatCompletionChunk
		want  string
	}{
		{"role", RoleChunk(testMeta),
			head + `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"logprobs":null}]}`},
		{"delta", DeltaChunk(testMeta, chat.Delta{Content: "a\"b"}),
			head + `"choices":[{"index":0,"delta":{"content":"a\"b"},"finish_reason":null,"logprobs":null}]}`},
		{"empty delta keeps content", DeltaChunk(testMeta, chat.Delta{}),
			head + `"choices":[{"index":0,"delta":{"content":""},"finish_reason":null,"logprobs":null}]}`},
		{"delta with logprobs", DeltaChunk(testMeta, chat.Delta{Content: "é", Logprobs: []chat.TokenLogprob{
			{Bytes: []byte{0xc3}, Logprob: -0.5, Top: []chat.TopLogprob{{Bytes: []byte{0xc3}, Logprob: -0.5}, {Bytes: []byte("x"), Logprob: -1.25}}},
			{Bytes: []byte{0xa9}, Logprob: 0},
		}}),
			head + `"choices":[{"index":0,"delta":{"content":"é"},"finish_reason":null,"logprobs":{"content":[` +
				`{"token":"\ufffd","logprob":-0.5,"bytes":[195],"top_logprobs":[{"token":"\ufffd","logprob":-0.5,"bytes":[195]},{"token":"x","logprob":-1.25,"bytes":[120]}]},` +
				`{"token":"\ufffd","logprob":0,"bytes":[169],"top_logprobs":[]}],"refusal":null}}]}`},
		{"finish", FinishChunk(testMeta, res),
			head + `"choices":[{"index":0,"delta":{},"finish_reason":"stop","logprobs":null}]}`},
		{"usage", UsageChunk(testMeta, res),
			head + `"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3,"prompt_tokens_details":{"cached_tokens":0}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := json.Marshal(tt.chunk)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestModelListJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		list ModelList
		want string
	}{
		{"one", NewModelList(NewModel("tiny", 1700000000, "slm-mesh")),
			`{"object":"list","data":[{"id":"tiny","object":"model","created":1700000000,"owned_by":"slm-mesh"}]}`},
		{"none is an empty array", NewModelList(), `{"object":"list","data":[]}`},
	}
	for _, tt := range tests {
		got, err := json.Marshal(tt.list)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("%s: got  %s\nwant %s", tt.name, got, tt.want)
		}
	}
}
