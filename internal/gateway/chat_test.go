package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/mesh/meshtest"
	"github.com/slm-mesh/slm-mesh/internal/openai"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// The chat path against in-process fake callers: a real gateway, real RPC
// pool and server on loopback, a fake only where the caller tier would be
// (the real tiers together are tested in e2e).

// startMeshGateway serves a gateway whose caller pool reaches callers, each
// on its own loopback port, as the gateway's main wires it (no retries).
func startMeshGateway(t *testing.T, callers ...*meshtest.Caller) *httptest.Server {
	t.Helper()
	var addrs []string
	for _, c := range callers {
		addrs = append(addrs, c.Serve(t))
	}
	pool := meshtest.Pool(t, discovery.ServiceCaller, rpc.PoolConfig{}, addrs...)
	g, err := New(Config{Caller: pool})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv
}

// serving is a caller status that names model as served.
func serving(model string) mesh.CallerStatus {
	return mesh.CallerStatus{Inference: []mesh.InferenceStatus{{Addr: "127.0.0.1:1", Model: model}}}
}

func post(t *testing.T, srv *httptest.Server, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// events reads a server-sent event stream to its end: the data of each
// event.
func events(t *testing.T, resp *http.Response) []string {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q, want text/event-stream", ct)
	}
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, data)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestChatCompletion(t *testing.T) {
	t.Parallel()
	fake := &meshtest.Caller{Generate: meshtest.Reply("tiny", "Hello", ",", " world")}
	srv := startMeshGateway(t, fake)
	resp := post(t, srv, `{"messages":[{"role":"developer","content":"Be brief."},{"role":"user","content":"hi"}],`+
		`"max_completion_tokens":7,"temperature":0.5,"stop":"END"}`)
	var c openai.ChatCompletion
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%d: %v", resp.StatusCode, err)
	}
	if len(c.Choices) != 1 || c.Choices[0].Message.Content == nil || *c.Choices[0].Message.Content != "Hello, world" || c.Choices[0].FinishReason != "stop" ||
		c.Model != "tiny" || c.Usage.CompletionTokens != 3 || c.Usage.PromptTokens != 2 {
		t.Errorf("completion %+v", c)
	}
	// The caller got the domain request the client meant.
	reqs := fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d calls to the caller, want 1", len(reqs))
	}
	got := reqs[0]
	if got.MaxTokens != 7 || got.Temperature == nil || *got.Temperature != 0.5 || len(got.Stop) != 1 ||
		len(got.Messages) != 2 || got.Messages[0].Role != chat.RoleSystem {
		t.Errorf("the caller got %+v", got)
	}
}

func TestChatStream(t *testing.T) {
	t.Parallel()
	fake := &meshtest.Caller{Report: serving("tiny"), Generate: meshtest.Reply("tiny", "Once", " upon")}
	srv := startMeshGateway(t, fake)
	resp := post(t, srv, `{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	evs := events(t, resp)
	// Role, two deltas, finish, usage, [DONE].
	if len(evs) != 6 || evs[5] != "[DONE]" {
		t.Fatalf("events %q", evs)
	}
	var text strings.Builder
	for _, ev := range evs[:5] {
		var c openai.ChatCompletionChunk
		if err := json.Unmarshal([]byte(ev), &c); err != nil {
			t.Fatalf("event %q: %v", ev, err)
		}
		if c.Model != "tiny" {
			t.Errorf("chunk model %q", c.Model)
		}
		if len(c.Choices) == 1 && c.Choices[0].Delta.Content != nil {
			text.WriteString(*c.Choices[0].Delta.Content)
		}
	}
	if text.String() != "Once upon" || !strings.Contains(evs[3], `"finish_reason":"stop"`) || !strings.Contains(evs[4], `"completion_tokens":2`) {
		t.Errorf("events %q", evs)
	}
}

// TestChatErrorBeforeText proves a request refused before any text gets its
// own status and a JSON error, streamed or not.
func TestChatErrorBeforeText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		status int
		typ    string
	}{
		{"overloaded", chat.Errorf(chat.CodeOverloaded, "all slots busy"), http.StatusTooManyRequests, openai.TypeRateLimit},
		{"unavailable", chat.Errorf(chat.CodeUnavailable, "no inference instance at 10.0.0.7"), http.StatusServiceUnavailable, openai.TypeServer},
		{"invalid", chat.Errorf(chat.CodeInvalidArgument, "the prompt is too long"), http.StatusBadRequest, openai.TypeInvalidRequest},
		{"internal", errors.New("a secret detail"), http.StatusInternalServerError, openai.TypeServer},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			t.Run(tt.name+map[bool]string{false: "", true: " stream"}[stream], func(t *testing.T) {
				t.Parallel()
				srv := startMeshGateway(t, &meshtest.Caller{Generate: meshtest.Fail(tt.err)})
				body := `{"messages":[{"role":"user","content":"hi"}]}`
				if stream {
					body = `{"messages":[{"role":"user","content":"hi"}],"stream":true}`
				}
				resp := post(t, srv, body)
				b, _ := io.ReadAll(resp.Body)
				var e openai.Error
				if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != tt.status || e.Type != tt.typ {
					t.Fatalf("%d %s (%v), want %d %s", resp.StatusCode, b, err, tt.status, tt.typ)
				}
				if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
					t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
				}
				if strings.Contains(string(b), "secret") || strings.Contains(string(b), "10.0.0.7") {
					t.Errorf("internal detail reached the client: %s", b)
				}
				if (tt.status == 429 || tt.status == 503) && resp.Header.Get("Retry-After") == "" {
					t.Errorf("%d without Retry-After", tt.status)
				}
			})
		}
	}
}

// TestChatErrorAfterText proves a failure after text ends a stream with an
// error event (the status is already 200), and fails a non-streamed
// request as a whole.
func TestChatErrorAfterText(t *testing.T) {
	t.Parallel()
	fake := &meshtest.Caller{Generate: meshtest.Fail(chat.Errorf(chat.CodeUnavailable, "lost the instance"), "Once", " upon")}
	srv := startMeshGateway(t, fake)

	resp := post(t, srv, `{"messages":[{"role":"user","content":"hi"}],"stream":true}`)
	evs := events(t, resp)
	if resp.StatusCode != http.StatusOK || len(evs) != 4 || !strings.Contains(evs[1], "Once") ||
		!strings.HasPrefix(evs[3], `{"error":`) || !strings.Contains(evs[3], openai.TypeServer) {
		t.Errorf("%d, events %q: want role, two deltas and an error event", resp.StatusCode, evs)
	}

	resp = post(t, srv, `{"messages":[{"role":"user","content":"hi"}]}`)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(string(b), "Once") {
		t.Errorf("non-streamed: %d %s, want 503 without the partial text", resp.StatusCode, b)
	}
}

// TestChatModelNotFound proves the caller's not_found for a model reaches
// the client as 404 model_not_found naming it, streamed or not (the caller
// alone decides which models exist), and a request for a served model goes
// through.
func TestChatModelNotFound(t *testing.T) {
	t.Parallel()
	fake := &meshtest.Caller{Report: serving("tiny"), Generate: func(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error) {
		if req.Model != "tiny" {
			return chat.Result{}, &chat.Error{Code: chat.CodeNotFound, Message: "The model `" + req.Model + "` does not exist."}
		}
		return meshtest.Reply("tiny", "ok")(ctx, req, send)
	}}
	srv := startMeshGateway(t, fake)

	for _, stream := range []string{"false", "true"} {
		resp := post(t, srv, `{"model":"gpt-nothing","stream":`+stream+`,"messages":[{"role":"user","content":"hi"}]}`)
		e := readError(t, resp)
		if resp.StatusCode != http.StatusNotFound || e.Code != "model_not_found" || !strings.Contains(e.Message, "gpt-nothing") {
			t.Errorf("unknown model (stream %s): %d %+v", stream, resp.StatusCode, e)
		}
	}
	if resp := post(t, srv, `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != http.StatusOK {
		t.Errorf("served model: %d", resp.StatusCode)
	}
}

// TestGatewayDoesNotRetry proves the gateway's pool leaves retries to the
// callers: with two callers that are both overloaded, a request makes one
// attempt, not one per caller.
func TestGatewayDoesNotRetry(t *testing.T) {
	t.Parallel()
	full := meshtest.Fail(chat.Errorf(chat.CodeOverloaded, "full"))
	a, b := &meshtest.Caller{Generate: full}, &meshtest.Caller{Generate: full}
	srv := startMeshGateway(t, a, b)
	// Both connected, so that a retry would have somewhere to go.
	waitMetric(t, srv, "slm_caller_instances 2")
	const requests = 4
	for range requests {
		if resp := post(t, srv, `{"messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("status %d, want 429", resp.StatusCode)
		}
	}
	if n := a.Calls() + b.Calls(); n != requests {
		t.Errorf("%d calls to the callers for %d requests: the gateway retried", n, requests)
	}
}

// TestHealthSurvivesClientGoingAway proves a client that disconnects while
// /health refreshes the caller's status neither fails the refresh nor
// leaves an error behind: the next /health is 200. (It was a 503 for the
// status cache's TTL, which Consul acts on.)
func TestHealthSurvivesClientGoingAway(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	fake := &meshtest.Caller{StatusFunc: func(ctx context.Context) (mesh.CallerStatus, error) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-release:
			return serving("tiny"), nil
		case <-ctx.Done():
			return mesh.CallerStatus{}, ctx.Err()
		}
	}}
	srv := startMeshGateway(t, fake)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/health", nil)
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the status call never reached the caller")
	}
	cancel() // the client goes away mid-refresh
	<-done
	// Its handler has returned (on the old code, after its context ended
	// the refresh); only then may the refresh finish.
	waitMetric(t, srv, `slm_http_requests_total{route="/health",status="503"} 1`)
	close(release)

	resp, err := http.Get(srv.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	var rep mesh.Health
	_ = json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || rep.Status != "ok" || len(rep.Models) != 1 {
		t.Errorf("after a client left mid-refresh: %d %+v", resp.StatusCode, rep)
	}
	if n := fake.StatusCalls(); n != 1 {
		t.Errorf("%d status calls, want 1: the refresh is shared and its answer kept", n)
	}
}

// TestHealthSharesOneRefresh proves concurrent /health requests make one
// status call between them, and a failed refresh is not remembered.
func TestHealthSharesOneRefresh(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var fails atomic.Bool
	fails.Store(true)
	fake := &meshtest.Caller{StatusFunc: func(ctx context.Context) (mesh.CallerStatus, error) {
		<-release
		if fails.Load() {
			return mesh.CallerStatus{}, chat.Errorf(chat.CodeUnavailable, "no inference")
		}
		return serving("tiny"), nil
	}}
	srv := startMeshGateway(t, fake)
	const clients = 8
	codes := make(chan int, clients)
	for range clients {
		go func() {
			resp, err := http.Get(srv.URL + "/health")
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	// Let the requests gather behind the one refresh, then fail it.
	time.Sleep(200 * time.Millisecond)
	close(release)
	for range clients {
		if c := <-codes; c != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503 while the caller fails", c)
		}
	}
	if n := fake.StatusCalls(); n > 2 {
		t.Errorf("%d status calls for %d concurrent requests, want them shared", n, clients)
	}
	fails.Store(false)
	resp, err := http.Get(srv.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("after the caller recovered: %d, want 200 (a failure must not be cached)", resp.StatusCode)
	}
}

// waitMetric waits until the gateway's /metrics holds line.
func waitMetric(t *testing.T, srv *httptest.Server, line string) {
	t.Helper()
	meshtest.Eventually(t, "/metrics to show "+line, func() bool {
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		m, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(m), line)
	})
}

// TestChatFieldErrors proves a refusal that names a field reaches the
// client as OpenAI words it (issue defect 4): a context overflow is 400
// with param "messages" and code "context_length_exceeded", and a
// max_tokens over the limit names the field the client sent, in param and
// in the message, streamed or not. The gateway passes the name the client
// used down (chat.Request.MaxTokensParam) and the refusal's text up as it
// is: the fake caller words the limit as the caller does.
func TestChatFieldErrors(t *testing.T) {
	t.Parallel()
	overflow := func(chat.Request) error {
		return &chat.Error{Code: chat.CodeInvalidArgument, Param: "messages", Reason: "context_length_exceeded",
			Message: "the prompt is 2000 tokens but a request may use at most 1024 (prompt and completion)"}
	}
	limit := func(req chat.Request) error {
		return chat.Invalidf(req.MaxTokensName(), "Invalid '%s': 5000 is above this deployment's limit of 2048.", req.MaxTokensName())
	}
	tests := []struct {
		name        string
		err         func(chat.Request) error
		fields      string
		param, code string
		msg         string
	}{
		{"context overflow", overflow, ``, "messages", "context_length_exceeded", "1024"},
		{"context overflow with max_completion_tokens", overflow, `,"max_completion_tokens":10`, "messages", "context_length_exceeded", "1024"},
		{"max_tokens over the limit", limit, `,"max_tokens":5000`, "max_tokens", "", "Invalid 'max_tokens': 5000"},
		{"max_completion_tokens over the limit", limit, `,"max_completion_tokens":5000`, "max_completion_tokens", "", "Invalid 'max_completion_tokens': 5000"},
	}
	for _, tt := range tests {
		for _, stream := range []string{"false", "true"} {
			t.Run(tt.name+" stream "+stream, func(t *testing.T) {
				t.Parallel()
				srv := startMeshGateway(t, &meshtest.Caller{Generate: func(_ context.Context, req chat.Request, _ func(chat.Delta) error) (chat.Result, error) {
					return chat.Result{}, tt.err(req)
				}})
				resp := post(t, srv, `{"messages":[{"role":"user","content":"hi"}],"stream":`+stream+tt.fields+`}`)
				e := readError(t, resp)
				if resp.StatusCode != http.StatusBadRequest || e.Param != tt.param || e.Code != tt.code || !strings.Contains(e.Message, tt.msg) {
					t.Errorf("got %d %+v, want 400 param %q code %q, a message with %q", resp.StatusCode, e, tt.param, tt.code, tt.msg)
				}
				if strings.Contains(tt.fields, "max_completion_tokens") && strings.Contains(e.Message, "'max_tokens'") {
					t.Errorf("the message names max_tokens, which the client did not send: %q", e.Message)
				}
			})
		}
	}
}
