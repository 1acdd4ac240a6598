package load

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Bodies the way the gateway writes them; the cases below break one thing
// at a time.
const (
	okCompletion = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"one two three four"},"finish_reason":"length","logprobs":null}],"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}`
	roleChunk    = `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n"
	textChunks   = `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"one two"},"finish_reason":null}]}` + "\n\n" +
		`data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" three four"},"finish_reason":null}]}` + "\n\n"
	finishChunk = `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}` + "\n\n"
	usageChunk  = `data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}` + "\n\n"
	done        = "data: [DONE]\n\n"
	okStream    = roleChunk + textChunks + finishChunk + usageChunk + done
	overloaded  = `{"error":{"message":"The server is overloaded.","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`
)

// reply is what a scripted server answers.
type reply struct {
	status      int
	contentType string
	retryAfter  string
	body        string
}

// scripted serves r to every request after checking that the request is
// the greedy one the client must send.
func scripted(t *testing.T, r reply) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body struct {
			Messages      []map[string]string `json:"messages"`
			MaxTokens     int                 `json:"max_tokens"`
			Temperature   *float64            `json:"temperature"`
			Stream        bool                `json:"stream"`
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := json.NewDecoder(req.Body).Decode(&body); err != nil || req.URL.Path != "/v1/chat/completions" ||
			body.Temperature == nil || *body.Temperature != 0 || body.MaxTokens != 4 || len(body.Messages) != 1 ||
			body.Stream != body.StreamOptions.IncludeUsage {
			t.Errorf("unexpected request %s: %+v (%v)", req.URL.Path, body, err)
		}
		if r.contentType != "" {
			w.Header().Set("Content-Type", r.contentType)
		}
		if r.retryAfter != "" {
			w.Header().Set("Retry-After", r.retryAfter)
		}
		w.WriteHeader(r.status)
		fmt.Fprint(w, r.body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestCheck(t *testing.T) {
	t.Parallel()
	const (
		jsonCT = "application/json; charset=utf-8"
		sseCT  = "text/event-stream"
	)
	for _, tc := range []struct {
		name   string
		stream bool
		reply  reply
		want   Outcome
	}{
		{"completion", false, reply{200, jsonCT, "", okCompletion}, OK},
		{"completion that stopped early", false, reply{200, jsonCT, "", strings.Replace(strings.Replace(okCompletion, `"length"`, `"stop"`, 1), `"completion_tokens":4,"total_tokens":9`, `"completion_tokens":2,"total_tokens":7`, 1)}, OK},
		{"not JSON", false, reply{200, jsonCT, "", okCompletion[:40]}, Malformed},
		{"JSON then garbage", false, reply{200, jsonCT, "", okCompletion + "x"}, Malformed},
		{"not a JSON content type", false, reply{200, "text/plain", "", okCompletion}, Malformed},
		{"wrong object", false, reply{200, jsonCT, "", strings.Replace(okCompletion, `"chat.completion"`, `"text_completion"`, 1)}, Malformed},
		{"no choices", false, reply{200, jsonCT, "", `{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":0,"total_tokens":5}}`}, Malformed},
		{"no usage", false, reply{200, jsonCT, "", strings.Replace(okCompletion, `"usage"`, `"usage_"`, 1)}, Malformed},
		{"no prompt tokens", false, reply{200, jsonCT, "", strings.Replace(okCompletion, `"prompt_tokens":5,"completion_tokens":4,"total_tokens":9`, `"prompt_tokens":0,"completion_tokens":4,"total_tokens":4`, 1)}, Malformed},
		{"total is not the sum", false, reply{200, jsonCT, "", strings.Replace(okCompletion, `"total_tokens":9`, `"total_tokens":10`, 1)}, Malformed},
		{"text without completion tokens", false, reply{200, jsonCT, "", strings.Replace(okCompletion, `"completion_tokens":4,"total_tokens":9`, `"completion_tokens":0,"total_tokens":5`, 1)}, Malformed},
		{"null content", false, reply{200, jsonCT, "", strings.NewReplacer(`"one two three four"`, `null`, `"length"`, `"stop"`,
			`"completion_tokens":4,"total_tokens":9`, `"completion_tokens":0,"total_tokens":5`).Replace(okCompletion)}, Malformed},
		{"completion tokens without text", false, reply{200, jsonCT, "", strings.Replace(okCompletion, `"one two three four"`, `""`, 1)}, Malformed},
		{"length below max_tokens", false, reply{200, jsonCT, "", strings.Replace(okCompletion, `"completion_tokens":4,"total_tokens":9`, `"completion_tokens":3,"total_tokens":8`, 1)}, Malformed},
		{"more than max_tokens", false, reply{200, jsonCT, "", strings.Replace(strings.Replace(okCompletion, `"length"`, `"stop"`, 1), `"completion_tokens":4,"total_tokens":9`, `"completion_tokens":5,"total_tokens":10`, 1)}, Malformed},
		{"unknown finish reason", false, reply{200, jsonCT, "", strings.Replace(okCompletion, `"length"`, `"tool_calls"`, 1)}, Malformed},

		{"stream", true, reply{200, sseCT, "", okStream}, OK},
		{"stream without [DONE]", true, reply{200, sseCT, "", roleChunk + textChunks + finishChunk + usageChunk}, Malformed},
		{"stream with a bad event", true, reply{200, sseCT, "", roleChunk + "data: {\"id\":\n\n" + done}, Malformed},
		{"stream without usage", true, reply{200, sseCT, "", roleChunk + textChunks + finishChunk + done}, Malformed},
		{"stream without finish reason", true, reply{200, sseCT, "", roleChunk + textChunks + usageChunk + done}, Malformed},
		{"stream with two finish reasons", true, reply{200, sseCT, "", roleChunk + textChunks + finishChunk + finishChunk + usageChunk + done}, Malformed},
		{"stream whose id changes", true, reply{200, sseCT, "", strings.Replace(okStream, `"id":"c1"`, `"id":"c2"`, 1)}, Malformed},
		{"stream with text after the finish", true, reply{200, sseCT, "", roleChunk + finishChunk + textChunks + usageChunk + done}, Malformed},
		{"stream with inconsistent usage", true, reply{200, sseCT, "", strings.Replace(okStream, `"completion_tokens":4,"total_tokens":9`, `"completion_tokens":3,"total_tokens":8`, 1)}, Malformed},
		{"stream as JSON", true, reply{200, jsonCT, "", okStream}, Malformed},
		{"stream that fails midway", true, reply{200, sseCT, "", roleChunk + `data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}}` + "\n\n"}, Other},

		{"429 with Retry-After", false, reply{429, jsonCT, "1", overloaded}, RateLimited},
		{"429 without Retry-After", false, reply{429, jsonCT, "", overloaded}, NoRetryAfter},
		{"429 with a Retry-After that is no number", true, reply{429, jsonCT, "soon", overloaded}, NoRetryAfter},
		{"503", true, reply{503, jsonCT, "1", `{"error":{"message":"no instance","type":"server_error","param":null,"code":"service_unavailable"}}`}, Unavailable},
		{"500", false, reply{500, jsonCT, "", `{"error":{"message":"oops","type":"server_error","param":null,"code":null}}`}, Other},
		{"400", false, reply{400, jsonCT, "", `{"error":{"message":"bad","type":"invalid_request_error","param":"messages","code":null}}`}, Other},
		{"503 without the error envelope", false, reply{503, "text/plain", "1", "Service Unavailable"}, Malformed},
		{"error without a message", false, reply{429, jsonCT, "1", `{"error":{"message":"","type":"rate_limit_error"}}`}, Malformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := scripted(t, tc.reply)
			c := &Client{BaseURL: srv.URL, Timeout: 10 * time.Second}
			r := c.Do(context.Background(), Request{Prompt: "p", MaxTokens: 4, Stream: tc.stream})
			if r.Outcome != tc.want {
				t.Fatalf("outcome %s (%s), want %s", r.Outcome, r.Detail, tc.want)
			}
			if r.Outcome == OK && (r.Text != "one two three four" && r.Text != "one two") {
				t.Errorf("text %q", r.Text)
			}
			if r.Outcome == OK && tc.stream && r.FirstToken <= 0 {
				t.Errorf("no time to first token for a stream")
			}
			if r.Outcome == RateLimited && r.RetryAfter != time.Second {
				t.Errorf("Retry-After %v, want 1s", r.RetryAfter)
			}
		})
	}
}

// TestCheckCutShort covers responses that stop arriving: a connection
// closed midway, and a server that goes quiet until the client's timeout.
// The prompt tells the server which.
func TestCheckCutShort(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Messages) != 1 {
			t.Errorf("request: %v", err)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, roleChunk+textChunks)
		w.(http.Flusher).Flush()
		switch body.Messages[0].Content {
		case "close":
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		case "wait":
			<-r.Context().Done()
		}
	}))
	t.Cleanup(srv.Close)

	c := &Client{BaseURL: srv.URL, Timeout: 300 * time.Millisecond}
	for _, tc := range []struct {
		prompt string
		want   Outcome
	}{
		{"close", Malformed},
		{"wait", Hung},
	} {
		r := c.Do(context.Background(), Request{Prompt: tc.prompt, MaxTokens: 4, Stream: true})
		if r.Outcome != tc.want {
			t.Errorf("%s: outcome %s (%s), want %s", tc.prompt, r.Outcome, r.Detail, tc.want)
		}
	}

	srv.Close()
	if r := c.Do(context.Background(), Request{Prompt: "p", MaxTokens: 4}); r.Outcome != Other || r.Status != 0 {
		t.Errorf("no server: outcome %s (%s), status %d; want other without status", r.Outcome, r.Detail, r.Status)
	}
}
