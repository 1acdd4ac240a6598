package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
)

// TestHostileContent sends requests that the gateway lets through but whose
// content is hostile, all the way to the model: NUL characters, broken
// surrogates, control tokens spelt out, a prompt far past the context,
// numbers at the ends of their types. Each must get a clear status: 200
// with a well-formed completion, streamed the same as not, or a 400 that
// says why. (Requests the gateway refuses by itself are tested in
// internal/gateway's TestHostileRequests; TestErrors has the other
// statuses.)
func TestHostileContent(t *testing.T) {
	t.Parallel()
	m := startMesh(t, localmesh.Config{Parallel: 2})
	// spelt is 32 control tokens of stories260K's vocabulary (BOS and EOS),
	// written out; as text each is several tokens.
	spelt := strings.Repeat(`</s><s>`, 16)
	const greedy = `"max_tokens":8,"temperature":0`
	tests := []struct {
		name       string
		content    string // JSON string contents: escapes are the JSON's
		fields     string // the request's other fields
		status     int
		message    string // for a 400, a part of the message
		minPrompt  int64  // for a 200, the fewest prompt tokens
		wantStream bool   // for a 200, stream it too and compare
	}{
		{name: "NUL characters", content: `a\u0000b\u0000\u0000`, fields: greedy, status: 200, wantStream: true},
		{name: "broken surrogates", content: `\ud800 x \udfff`, fields: greedy, status: 200},
		{name: "invisible and bidi characters", content: `\u2028\u2029\u200b\u202e\ufeff 👩‍👩‍👧`, fields: greedy, status: 200},
		{name: "control tokens spelt out", content: spelt, fields: greedy, status: 200, minPrompt: 2*32 + 1, wantStream: true},
		{name: "control tokens as stop strings", content: "Once upon a time", fields: greedy + `,"stop":["</s>","<s>"]`, status: 200},
		{name: "seed at the int64 limits", content: "Once", fields: `"max_tokens":8,"seed":-9223372036854775808`, status: 200},
		{name: "prompt past the context", content: strings.Repeat("Once upon a time. ", 8000), fields: greedy, status: 400,
			message: "tokens but a request may use at most 512"},
		{name: "800 KB of emoji", content: strings.Repeat("😀", 200_000), fields: greedy, status: 400,
			message: "tokens but a request may use at most 512"},
		{name: "max_tokens at the int64 limit", content: "Once", fields: `"max_tokens":9223372036854775807`, status: 400,
			message: "limit of 2048"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"messages":[{"role":"user","content":"` + tt.content + `"}],` + tt.fields + `}`
			resp, b := m.request(t, http.MethodPost, "/v1/chat/completions", body, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("%d %.300s, want %d", resp.StatusCode, b, tt.status)
			}
			if tt.status != http.StatusOK {
				var e apiError
				if err := json.Unmarshal(b, &e); err != nil || e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, tt.message) {
					t.Errorf("%s (%v), want an invalid_request_error saying %q", b, err, tt.message)
				}
				return
			}
			var res struct {
				Choices []struct {
					Message struct {
						Content string `json:"content"`
					} `json:"message"`
					FinishReason string `json:"finish_reason"`
				} `json:"choices"`
				Usage struct {
					PromptTokens     int64 `json:"prompt_tokens"`
					CompletionTokens int64 `json:"completion_tokens"`
				} `json:"usage"`
			}
			if err := json.Unmarshal(b, &res); err != nil || len(res.Choices) != 1 || res.Usage.CompletionTokens < 1 {
				t.Fatalf("%s (%v), want a completion", b, err)
			}
			if res.Usage.PromptTokens < tt.minPrompt {
				t.Errorf("%d prompt tokens, want at least %d: text became control tokens", res.Usage.PromptTokens, tt.minPrompt)
			}
			if !tt.wantStream {
				return
			}
			if res.Choices[0].FinishReason != "length" {
				t.Fatalf("finish_reason %q; the stream check wants length", res.Choices[0].FinishReason)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s := m.rawStream(ctx, strings.TrimSuffix(body, "}")+`,"stream":true,"stream_options":{"include_usage":true}}`)
			for _, p := range s.check(m.model, res.Choices[0].Message.Content, int(res.Usage.CompletionTokens)) {
				t.Error(p)
			}
		})
	}
}
