package openai

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

func TestDecodeCompletionRequestValid(t *testing.T) {
	t.Parallel()
	r, e := DecodeCompletionRequest([]byte(`{"model":"m","prompt":["a","b"],"max_tokens":5,"temperature":0,"top_p":0.5,"stop":"x","seed":3,"echo":true,"stream":true,"stream_options":{"include_usage":true},"n":1,"suffix":null}`), Limits{})
	if e != nil {
		t.Fatal(e)
	}
	if len(r.Prompts) != 2 || *r.Prompts[1].RawPrompt != "b" || r.Prompts[0].MaxTokens != 5 || *r.Prompts[0].Temperature != 0 ||
		*r.Prompts[0].TopP != 0.5 || r.Prompts[0].Stop[0] != "x" || *r.Prompts[0].Seed != 3 || !r.Echo || !r.Stream || !r.IncludeUsage || r.Model != "m" {
		t.Fatalf("%+v", r)
	}
	if r.Prompts[0].RawPrompt == r.Prompts[1].RawPrompt {
		t.Fatal("prompts share their text")
	}
	r, e = DecodeCompletionRequest([]byte(`{"prompt":"","logprobs":2}`), Limits{})
	if e != nil {
		t.Fatal(e)
	}
	if p := r.Prompts[0]; p.MaxTokens != DefaultCompletionMaxTokens || !p.Logprobs || p.TopLogprobs != 2 || *p.RawPrompt != "" || len(p.Messages) != 0 {
		t.Fatalf("%+v", p)
	}
}

func TestDecodeCompletionRequestInvalid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ body, param string }{
		{`{"model":"m"}`, "prompt"},
		{`{"prompt":3}`, "prompt"},
		{`{"prompt":[]}`, "prompt"},
		{`{"prompt":[1,2]}`, "prompt[0]"},
		{`{"prompt":["a",[1]]}`, "prompt[1]"},
		{`{"prompt":"a","suffix":"b"}`, "suffix"},
		{`{"prompt":"a","n":2}`, "n"},
		{`{"prompt":"a","best_of":3}`, "best_of"},
		{`{"prompt":"a","logprobs":6}`, "logprobs"},
		{`{"prompt":"a","logprobs":1,"echo":true}`, "echo"},
		{`{"prompt":"a","max_tokens":0}`, "max_tokens"},
		{`{"prompt":"a","temperature":3}`, "temperature"},
		{`{"prompt":"a","stop":["","x"]}`, "stop[0]"},
		{`{"prompt":"a","stream_options":{}}`, "stream_options"},
		{`{"prompt":"a","logit_bias":{"1":2}}`, "logit_bias"},
		{`{"prompt":"a","messages":[]}`, "messages"},
		{`{"prompt":"a","max_tokens":"x"}`, "max_tokens"},
	} {
		_, e := DecodeCompletionRequest([]byte(tc.body), Limits{})
		if e == nil || e.Param != tc.param || e.Status != http.StatusBadRequest {
			t.Errorf("%s: %+v, want 400 naming %s", tc.body, e, tc.param)
		}
	}
}

func TestTextCompletionAndStream(t *testing.T) {
	t.Parallel()
	meta := CompletionMeta{ID: "cmpl-1", Created: 5, Model: "m"}
	res := chat.Result{FinishReason: chat.FinishLength, PromptTokens: 3, CompletionTokens: 2}
	b, _ := json.Marshal(NewTextCompletion(meta, []CompletionChoice{{Text: "ab", Result: res}, {Text: "c", Result: chat.Result{PromptTokens: 1, CompletionTokens: 1}}}))
	want := `{"id":"cmpl-1","object":"text_completion","created":5,"model":"m","choices":[{"text":"ab","index":0,"logprobs":null,"finish_reason":"length"},{"text":"c","index":1,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	lp := NewTextLogprobs([]chat.TokenLogprob{{Bytes: []byte("a"), Logprob: -1, Top: []chat.TopLogprob{{Bytes: []byte("a"), Logprob: -1}}}, {Bytes: []byte("bc"), Logprob: -2}}, 4)
	if b, _ := json.Marshal(lp); string(b) != `{"tokens":["a","bc"],"token_logprobs":[-1,-2],"top_logprobs":[{"a":-1},{}],"text_offset":[4,5]}` {
		t.Errorf("logprobs %s", b)
	}

	var buf bytes.Buffer
	ts := NewTextStream(&buf, nil, meta, true)
	_ = ts.Send(0, "", nil) // nothing
	_ = ts.Send(0, "ab", nil)
	_ = ts.Finish(0, res)
	_ = ts.Usage([]chat.Result{res})
	_ = ts.Done()
	events := strings.Split(strings.TrimSpace(buf.String()), "\n\n")
	wantEvents := []string{
		`data: {"id":"cmpl-1","object":"text_completion","created":5,"model":"m","choices":[{"text":"ab","index":0,"logprobs":null,"finish_reason":null}],"usage":null}`,
		`data: {"id":"cmpl-1","object":"text_completion","created":5,"model":"m","choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"length"}],"usage":null}`,
		`data: {"id":"cmpl-1","object":"text_completion","created":5,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`,
		`data: [DONE]`,
	}
	if strings.Join(events, "\n") != strings.Join(wantEvents, "\n") {
		t.Errorf("stream\n%s\nwant\n%s", strings.Join(events, "\n"), strings.Join(wantEvents, "\n"))
	}
}

// FuzzDecodeCompletionRequest: a request or a 400/413, never a panic;
// an accepted request has a prompt per choice and no messages.
func FuzzDecodeCompletionRequest(f *testing.F) {
	for _, s := range []string{`{"prompt":"a"}`, `{"prompt":["a","b"],"max_tokens":3,"logprobs":2}`, `{"prompt":"x","stream":true,"stream_options":{"include_usage":true},"echo":true}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, e := DecodeCompletionRequest(body, fuzzLimits)
		if (r == nil) == (e == nil) {
			t.Fatalf("got request %v and error %v", r, e)
		}
		if e != nil {
			if e.Status != http.StatusBadRequest && e.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d: %v", e.Status, e)
			}
			return
		}
		if len(r.Prompts) == 0 {
			t.Fatal("no prompts")
		}
		for _, p := range r.Prompts {
			if p.RawPrompt == nil || len(p.Messages) > 0 || p.MaxTokens < 1 {
				t.Fatalf("prompt %+v", p)
			}
		}
	})
}
