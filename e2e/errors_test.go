package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
)

// TestErrors gets every error status of the API from real requests to a
// mesh with API keys and a single inference slot with a queue of one. Its
// last subtests take the inference instance down: first with SIGTERM under
// a streaming request, which must complete, then for good; and back.
func TestErrors(t *testing.T) {
	t.Parallel()
	m := startMesh(t, localmesh.Config{APIKeys: "key-one,key-two", Parallel: 1, Queue: 1, Ctx: 1024})

	t.Run("Status", func(t *testing.T) {
		hi := `"messages":[{"role":"user","content":"hi"}]`
		huge := `{"messages":[{"role":"user","content":"` + strings.Repeat("a", 2<<20) + `"}]}`
		noKey := http.Header{"Authorization": {""}}
		tests := []struct {
			name         string
			method, path string
			body         string
			header       http.Header
			status       int
			typ          string
			param, code  string
			message      string // a part of the message, when it matters
		}{
			{"bad JSON", "POST", "/v1/chat/completions", `{"messages":[`, nil, 400, "invalid_request_error", "", "", ""},
			{"not an object", "POST", "/v1/chat/completions", `[1,2]`, nil, 400, "invalid_request_error", "", "", ""},
			{"max_tokens type", "POST", "/v1/chat/completions", `{` + hi + `,"max_tokens":"ten"}`, nil, 400, "invalid_request_error", "max_tokens", "", ""},
			{"temperature type", "POST", "/v1/chat/completions", `{` + hi + `,"temperature":"hot"}`, nil, 400, "invalid_request_error", "temperature", "", ""},
			{"messages type", "POST", "/v1/chat/completions", `{"messages":"hi"}`, nil, 400, "invalid_request_error", "messages", "", ""},
			{"stream type", "POST", "/v1/chat/completions", `{` + hi + `,"stream":"yes"}`, nil, 400, "invalid_request_error", "stream", "", ""},
			{"n 2", "POST", "/v1/chat/completions", `{` + hi + `,"n":2}`, nil, 400, "invalid_request_error", "n", "", ""},
			{"temperature range", "POST", "/v1/chat/completions", `{` + hi + `,"temperature":3}`, nil, 400, "invalid_request_error", "temperature", "", ""},
			{"no messages", "POST", "/v1/chat/completions", `{"messages":[]}`, nil, 400, "invalid_request_error", "messages", "", ""},
			// Refused by the inference, which knows the context (1024).
			{"max_tokens over the context", "POST", "/v1/chat/completions", `{` + hi + `,"max_tokens":1500}`, nil, 400, "invalid_request_error", "messages", "context_length_exceeded", "1024"},
			// Refused by the caller's policy (at most 2048).
			{"max_tokens over the limit", "POST", "/v1/chat/completions", `{` + hi + `,"max_tokens":5000}`, nil, 400, "invalid_request_error", "max_tokens", "", "2048"},
			// The same, named as the client named it.
			{"max_completion_tokens over the limit", "POST", "/v1/chat/completions", `{` + hi + `,"max_completion_tokens":5000}`, nil, 400, "invalid_request_error", "max_completion_tokens", "", "Invalid 'max_completion_tokens': 5000"},
			{"max_completion_tokens over the context", "POST", "/v1/chat/completions", `{` + hi + `,"max_completion_tokens":1500}`, nil, 400, "invalid_request_error", "messages", "context_length_exceeded", "max_completion_tokens 1500"},
			{"unknown model", "POST", "/v1/chat/completions", `{` + hi + `,"model":"gpt-nothing"}`, nil, 404, "invalid_request_error", "", "model_not_found", ""},
			{"huge body", "POST", "/v1/chat/completions", huge, nil, 413, "invalid_request_error", "", "request_too_large", ""},
			{"missing key", "POST", "/v1/chat/completions", `{` + hi + `}`, noKey, 401, "invalid_request_error", "", "invalid_api_key", ""},
			{"wrong key", "POST", "/v1/chat/completions", `{` + hi + `}`, http.Header{"Authorization": {"Bearer key-three"}}, 401, "invalid_request_error", "", "invalid_api_key", ""},
			{"models without key", "GET", "/v1/models", "", noKey, 401, "invalid_request_error", "", "invalid_api_key", ""},
			{"unknown route", "GET", "/v1/nothing", "", nil, 404, "invalid_request_error", "", "unknown_url", ""},
			{"wrong method", "GET", "/v1/chat/completions", "", nil, 405, "invalid_request_error", "", "method_not_allowed", ""},
			{"wrong method on health", "DELETE", "/health", "", nil, 405, "invalid_request_error", "", "method_not_allowed", ""},
			{"trailing slash", "POST", "/v1/chat/completions/", `{` + hi + `}`, nil, 404, "invalid_request_error", "", "unknown_url", ""},
			{"unknown field", "POST", "/v1/chat/completions", `{` + hi + `,"max_token":5}`, nil, 400, "invalid_request_error", "max_token", "", "Unrecognized request argument supplied: max_token"},
			{"tool_choice without tools", "POST", "/v1/chat/completions", `{` + hi + `,"tool_choice":"auto"}`, nil, 400, "invalid_request_error", "tool_choice", "", ""},
			{"top_logprobs without logprobs", "POST", "/v1/chat/completions", `{` + hi + `,"top_logprobs":2}`, nil, 400, "invalid_request_error", "top_logprobs", "", ""},
			{"top_logprobs over 20", "POST", "/v1/chat/completions", `{` + hi + `,"logprobs":true,"top_logprobs":21}`, nil, 400, "invalid_request_error", "top_logprobs", "", ""},
			{"unknown response_format", "POST", "/v1/chat/completions", `{` + hi + `,"response_format":{"type":"xml"}}`, nil, 400, "invalid_request_error", "response_format", "", ""},
			{"unknown model by id", "GET", "/v1/models/gpt-nothing", "", nil, 404, "invalid_request_error", "", "model_not_found", ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp, body := m.request(t, tt.method, tt.path, tt.body, tt.header)
				var e apiError
				if err := json.Unmarshal(body, &e); err != nil {
					t.Fatalf("%d %q is not an error envelope: %v", resp.StatusCode, body, err)
				}
				if resp.StatusCode != tt.status || e.Error.Type != tt.typ || str(e.Error.Param) != tt.param ||
					str(e.Error.Code) != tt.code || e.Error.Message == "" || !strings.Contains(e.Error.Message, tt.message) {
					t.Errorf("%d %s\nwant %d type %s param %q code %q", resp.StatusCode, body, tt.status, tt.typ, tt.param, tt.code)
				}
				if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || resp.Header.Get("X-Request-Id") == "" {
					t.Errorf("headers %v", resp.Header)
				}
				if strings.Contains(string(body), "key-one") || strings.Contains(string(body), "key-three") {
					t.Errorf("the error shows a key: %s", body)
				}
			})
		}
	})

	// Requests that net/http refuses before any handler runs, sent raw to
	// the gateway binary: the answer is the JSON envelope too. An upload
	// over the limit announced with "Expect: 100-continue" gets its 413
	// first, with no "100 Continue".
	t.Run("HTTPLayer", func(t *testing.T) {
		tests := []struct {
			name, request string
			status        int
		}{
			{"bad header value", "GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-Bad: a\x01b\r\n\r\n", 400},
			{"bad escape", "GET /v1/models%zz HTTP/1.1\r\nHost: gw\r\n\r\n", 400},
			{"headers too large", "GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n", 431},
			{"over-limit upload with Expect", "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer key-one\r\n" +
				"Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 120000000\r\n\r\n", 413},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				conn := dialGateway(t, m, nil)
				_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := io.WriteString(conn, tt.request); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var e apiError
				if resp.StatusCode != tt.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
					json.Unmarshal(body, &e) != nil || e.Error.Message == "" || e.Error.Type != "invalid_request_error" {
					t.Errorf("%s %v %q, want %d with the error envelope", resp.Status, resp.Header, body, tt.status)
				}
			})
		}
	})

	t.Run("APIKey", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// Either configured key works.
		c := m.client(option.WithAPIKey("key-two"))
		if _, err := c.Chat.Completions.New(ctx, m.greedy(story, 3)); err != nil {
			t.Errorf("with the second key: %v", err)
		}
		c = m.client(option.WithAPIKey("key-on"))
		_, err := c.Chat.Completions.New(ctx, m.greedy(story, 3))
		var e *sdk.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusUnauthorized || e.Code != "invalid_api_key" {
			t.Errorf("with a prefix of a key: %v", err)
		}
		// /health and /metrics stay open.
		for _, path := range []string{"/health", "/metrics"} {
			if resp, body := m.request(t, http.MethodGet, path, "", http.Header{"Authorization": {""}}); resp.StatusCode != http.StatusOK {
				t.Errorf("%s without a key: %d %s", path, resp.StatusCode, body)
			}
		}
	})

	t.Run("RequestID", func(t *testing.T) {
		resp, body := m.request(t, http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`,
			http.Header{"X-Request-Id": {"e2e-request-42"}})
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Request-Id") != "e2e-request-42" {
			t.Errorf("%d, X-Request-Id %q: %s", resp.StatusCode, resp.Header.Get("X-Request-Id"), body)
		}
		resp, _ = m.request(t, http.MethodGet, "/v1/models", "", nil)
		if id := resp.Header.Get("X-Request-Id"); id == "" || id == "e2e-request-42" {
			t.Errorf("a request without an id got X-Request-Id %q", id)
		}
	})

	// A prompt that leaves less room than a completion usually takes, sent
	// without max_tokens, gets a shorter answer rather than a 400: the
	// engine owns that default and fits it to the context. (The caller's
	// own default of 256 made this a 400.)
	t.Run("LongPromptWithoutMaxTokens", func(t *testing.T) {
		const ctxLen, oldDefault = 1024, 256
		prompt := strings.Repeat("Once upon a time there was a girl. ", 80) // about 880 tokens
		body, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": prompt}}, "temperature": 0})
		resp, b := m.request(t, http.MethodPost, "/v1/chat/completions", string(body), nil)
		var c struct {
			Usage struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(b, &c); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%d %s (%v)", resp.StatusCode, b, err)
		}
		u := c.Usage
		if u.PromptTokens <= ctxLen-oldDefault || u.CompletionTokens < 1 || u.PromptTokens+u.CompletionTokens > ctxLen {
			t.Errorf("usage %+v: want a prompt over %d tokens and a completion within the %d tokens left", u, ctxLen-oldDefault, ctxLen-u.PromptTokens)
		}
	})

	t.Run("UnknownModelSDK", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		p := m.greedy(story, 3)
		p.Model = "gpt-nothing"
		c := m.client()
		_, err := c.Chat.Completions.New(ctx, p)
		var e *sdk.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusNotFound || e.Code != "model_not_found" {
			t.Errorf("unknown model: %v", err)
		}
	})

	t.Run("Overloaded", func(t *testing.T) {
		// One slot and a queue of one: of requests sent together, two are
		// admitted and the others are refused at once, streamed or not.
		const clients = 6
		type result struct {
			stream      bool
			status      int
			contentType string
			retryAfter  string
			body        string
		}
		results := make([]result, clients)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				stream := i%2 == 1
				body := `{"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":600,"temperature":0,"stream":` + strconv.FormatBool(stream) + `}`
				<-start
				resp, b, err := m.send(http.MethodPost, "/v1/chat/completions", body, nil)
				if err != nil {
					results[i] = result{stream: stream, body: err.Error()}
					return
				}
				results[i] = result{stream, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Retry-After"), string(b)}
			})
		}
		close(start)
		wg.Wait()
		ok, refused := 0, 0
		for _, r := range results {
			switch r.status {
			case http.StatusOK:
				ok++
				if r.stream && !strings.HasSuffix(r.body, "data: [DONE]\n\n") {
					t.Errorf("an admitted stream did not end with [DONE]: ...%s", r.body[max(0, len(r.body)-200):])
				}
			case http.StatusTooManyRequests:
				refused++
				var e apiError
				_ = json.Unmarshal([]byte(r.body), &e)
				if n, err := strconv.Atoi(r.retryAfter); err != nil || n < 1 || e.Error.Type != "rate_limit_error" ||
					str(e.Error.Code) != "rate_limit_exceeded" || !strings.HasPrefix(r.contentType, "application/json") {
					t.Errorf("429 (stream %v) with Retry-After %q, Content-Type %q: %s", r.stream, r.retryAfter, r.contentType, r.body)
				}
			default:
				t.Errorf("status %d (stream %v): %s", r.status, r.stream, r.body)
			}
		}
		if ok == 0 || refused == 0 {
			t.Errorf("%d requests succeeded and %d were refused with 429, want some of each", ok, refused)
		}
	})

	t.Run("Timeout", func(t *testing.T) { testTimeout(t, m) })

	t.Run("SIGTERMDrainsInference", func(t *testing.T) {
		testSIGTERMDrains(t, m)
	})

	t.Run("InferenceDown", func(t *testing.T) {
		inf := m.Proc("inference-1")
		inf.Kill() // already gone after SIGTERMDrainsInference, unless that failed
		select {
		case <-inf.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("the inference process is still running")
		}

		for _, stream := range []string{"false", "true"} {
			resp, body := m.request(t, http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":`+stream+`}`, nil)
			var e apiError
			_ = json.Unmarshal(body, &e)
			if resp.StatusCode != http.StatusServiceUnavailable || e.Error.Type != "server_error" || resp.Header.Get("Retry-After") == "" {
				t.Errorf("chat (stream %s) with the inference down: %d %v %s", stream, resp.StatusCode, resp.Header, body)
			}
			if strings.Contains(string(body), "127.0.0.1") {
				t.Errorf("the error shows an internal address: %s", body)
			}
		}

		// /health remembers the last answer for a moment.
		var h healthReport
		var code int
		if !eventually(10*time.Second, 100*time.Millisecond, func() bool {
			code, h = m.gatewayHealth(t)
			return code == http.StatusServiceUnavailable
		}) {
			t.Fatalf("/health with the inference down: %d %+v", code, h)
		}
		if h.Status == "ok" || h.Failing != "inference" || len(h.Models) != 0 {
			t.Errorf("/health with the inference down: %+v, want it to name the inference hop", h)
		}
	})

	t.Run("InferenceBack", func(t *testing.T) {
		// The mesh heals when the inference comes back; WaitReady must not
		// mistake the earlier process's exit for the new one's.
		if err := m.Restart("inference-1"); err != nil {
			t.Fatal(err)
		}
		if err := m.WaitReady(context.Background(), time.Minute); err != nil {
			t.Fatal(err)
		}
		if res := m.complete(t, m.greedy(story, 4)); res.Usage.CompletionTokens != 4 {
			t.Errorf("after the restart: %s", res.RawJSON())
		}
	})
}

// testSIGTERMDrains sends SIGTERM to the inference instance while a
// streamed request is being generated: the request must complete in full,
// and the process must then exit with status 0.
func testSIGTERMDrains(t *testing.T, m *mesh) {
	const maxTokens = 800
	inf := m.Proc("inference-1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := m.greedy(story, maxTokens)
	p.StreamOptions = sdk.ChatCompletionStreamOptionsParam{IncludeUsage: sdk.Bool(true)}
	c := m.client()
	signalled := false
	s := readStream(c.Chat.Completions.NewStreaming(ctx, p), func(string) bool {
		if !signalled {
			signalled = true
			if err := inf.Signal(syscall.SIGTERM); err != nil {
				t.Errorf("SIGTERM: %v", err)
			}
		}
		return true
	})
	if !signalled {
		t.Fatalf("no text arrived: %v", s.err)
	}
	if s.err != nil {
		t.Errorf("the stream in flight at SIGTERM failed: %v (after %d characters)", s.err, len(s.text))
	}
	if s.finish != "length" || s.usage == nil || s.usage.CompletionTokens != maxTokens {
		t.Errorf("the stream in flight at SIGTERM ended with finish_reason %q, usage %+v; want all %d tokens", s.finish, s.usage, maxTokens)
	}
	select {
	case <-inf.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the inference process did not exit within 30s of SIGTERM")
	}
	if code := inf.ExitCode(); code != 0 {
		t.Errorf("the inference exited with %s after SIGTERM, want status 0", inf.ExitStatus())
	}
}

// testTimeout starts a second gateway beside m's, with a request timeout
// far shorter than a long generation, and checks that it answers 504 and
// that the generation is cancelled down to the inference slot.
func testTimeout(t *testing.T, m *mesh) {
	port, err := localmesh.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	var out bytes.Buffer
	cmd := exec.Command(filepath.Join(binaries(t), "gateway"), "-addr", addr, "-discovery", "static",
		"-caller", m.Addr("caller"), "-request-timeout", "300ms")
	cmd.Stdout, cmd.Stderr = &out, &out
	// Like localmesh's processes: gone with the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("the second gateway's log:\n%s", out.String())
		}
	})
	if !eventually(30*time.Second, 50*time.Millisecond, func() bool {
		resp, err := httpClient.Get("http://" + addr + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatal("the second gateway did not become healthy")
	}

	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/chat/completions",
		strings.NewReader(`{"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":1000}`))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e apiError
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusGatewayTimeout || e.Error.Type != "server_error" || str(e.Error.Code) != "timeout" {
		t.Errorf("a generation longer than the request timeout: %d %s, want 504", resp.StatusCode, body)
	}
	if !eventually(5*time.Second, 20*time.Millisecond, func() bool { return m.inferenceHealth(t, "inference-1").Busy == 0 }) {
		t.Error("the inference slot is still busy after the gateway's timeout")
	}
}
