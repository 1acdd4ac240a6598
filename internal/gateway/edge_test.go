package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/mesh/meshtest"
	"github.com/slm-mesh/slm-mesh/internal/openai"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// rawExchange sends request on a new loopback connection to srv, then
// reads until the gateway closes it or 10 s pass, and returns the first
// response. Time out is a failure: the gateway must answer, not hang.
func rawExchange(t *testing.T, srv *httptest.Server, request string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	return readRawResponse(t, bufio.NewReader(conn))
}

// readRawResponse reads one response and its body from br.
func readRawResponse(t *testing.T, br *bufio.Reader) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s: body: %v", resp.Status, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, body
}

// TestHTTPLayerErrors sends requests that net/http refuses before any
// handler runs, and a trailing slash, all of which must get the OpenAI
// error envelope with the right status.
func TestHTTPLayerErrors(t *testing.T) {
	t.Parallel()
	pool := rpc.NewPool(discovery.NewStatic(), discovery.ServiceCaller, rpc.PoolConfig{ConnectWait: 10 * time.Millisecond})
	t.Cleanup(func() { pool.Close() })
	srv := serveGateway(t, Config{Caller: pool}, func(s *http.Server) { s.ReadHeaderTimeout = 500 * time.Millisecond })
	const body = `{"messages":[{"role":"user","content":"hi"}]}`
	post := func(path string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
	}
	tests := []struct {
		name    string
		request string
		status  int
		code    string
		message string
	}{
		{"headers too large", "GET /health HTTP/1.1\r\nHost: gw\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n",
			431, "request_headers_too_large", "headers are too large"},
		{"bad header value", "GET /health HTTP/1.1\r\nHost: gw\r\nX-Bad: a\x01b\r\n\r\n", 400, "", "not valid HTTP"},
		{"bad header name", "GET /health HTTP/1.1\r\nHost: gw\r\nX Bad: a\r\n\r\n", 400, "", "not valid HTTP"},
		{"bad % escape in the path", "GET /v1/models%zz HTTP/1.1\r\nHost: gw\r\n\r\n", 400, "", "not valid HTTP"},
		{"no Host", "GET /health HTTP/1.1\r\n\r\n", 400, "", "missing required Host header"},
		{"headers cut short by the header timeout", "GET /health HTTP/1.1\r\nHo", 400, "", "not valid HTTP"},
		{"unknown transfer encoding", "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: rot13\r\n\r\n", 501, "", "Transfer-Encoding"},
		{"unknown HTTP version", "GET /health HTTP/3.0\r\nHost: gw\r\n\r\n", 505, "", "not valid HTTP"},
		{"unknown expectation", "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nExpect: magic\r\nContent-Length: 2\r\n\r\n{}", 417, "", "Expect"},
		{"trailing slash on the chat path", post("/v1/chat/completions/"), 404, "unknown_url", "/v1/chat/completions/"},
		{"trailing slash on models", "GET /v1/models/ HTTP/1.1\r\nHost: gw\r\n\r\n", 404, "unknown_url", "/v1/models/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, _ := rawExchange(t, srv, tt.request)
			e := readError(t, resp)
			if resp.StatusCode != tt.status || e.Code != tt.code || !strings.Contains(e.Message, tt.message) {
				t.Errorf("got %d %+v, want %d code %q, message with %q", resp.StatusCode, e, tt.status, tt.code, tt.message)
			}
		})
	}
}

// TestWrapListenerLeavesResponsesAlone checks that what the handlers write,
// including a text/plain body, passes unchanged.
func TestWrapListenerLeavesResponsesAlone(t *testing.T) {
	t.Parallel()
	for _, b := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: x\r\n\r\nhi",
		"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nDate: x\r\n\r\nno",
		"HTTP/1.1 100 Continue\r\n\r\n",
		"data: x\n\n",
		"HTTP/1.1 ",
	} {
		if got, ok := rewriteHTTPError([]byte(b)); ok {
			t.Errorf("%q rewritten to %q", b, got)
		}
	}
}

// TestExpectContinueOverLimit announces a body far over the limit with
// "Expect: 100-continue", as curl does: the gateway must refuse it with
// 413 at once, without inviting the body with "100 Continue".
func TestExpectContinueOverLimit(t *testing.T) {
	t.Parallel()
	srv := startGateway(t)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"+
		"Expect: 100-continue\r\nContent-Length: 10000000000\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	first, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	if !strings.HasPrefix(first, "HTTP/1.1 413 ") {
		t.Fatalf("first response line %q, want a 413 (and no 100 Continue)", first)
	}
	resp, _ := readRawResponse(t, bufio.NewReader(io.MultiReader(strings.NewReader(first), br)))
	if e := readError(t, resp); e.Code != "request_too_large" {
		t.Errorf("413 with %+v", e)
	}
}

// TestBodyTimeout declares bodies and then sends nothing, or stops, or
// trickles: the gateway must answer 408 and let go of the connection after
// BodyTimeout (or ReadTimeout for the whole body), never wait for ever. The
// test servers have no timeouts of their own, so without these bounds the
// requests would hang until the client gives up.
func TestBodyTimeout(t *testing.T) {
	t.Parallel()
	pool := rpc.NewPool(discovery.NewStatic(), discovery.ServiceCaller, rpc.PoolConfig{ConnectWait: 10 * time.Millisecond})
	t.Cleanup(func() { pool.Close() })
	// WriteTimeout as in the service: the deadlines reach the connection
	// through its writer too.
	srv := serveGateway(t, Config{Caller: pool, BodyTimeout: 300 * time.Millisecond, ReadTimeout: 2 * time.Second, WriteTimeout: 5 * time.Second}, nil)
	head := func(extra string) string {
		return "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n" + extra + "Content-Length: 5000\r\n\r\n"
	}
	tests := []struct {
		name    string
		request string
		trickle bool // one byte every 50 ms after the request
	}{
		{"body never sent", head(""), false},
		{"body stops", head("") + `{"messages":[`, false},
		{"body never sent after 100 Continue", head("Expect: 100-continue\r\n"), false},
		// Each byte comes well within BodyTimeout; ReadTimeout ends it.
		{"body trickled past the read timeout", head(""), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(conn, tt.request); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.trickle {
				go func() {
					for ctx.Err() == nil {
						time.Sleep(50 * time.Millisecond)
						if _, err := conn.Write([]byte("a")); err != nil {
							return
						}
					}
				}()
			}
			br := bufio.NewReader(conn)
			resp, _ := readRawResponse(t, br)
			if resp.StatusCode == http.StatusContinue {
				resp, _ = readRawResponse(t, br)
			}
			if e := readError(t, resp); resp.StatusCode != http.StatusRequestTimeout || e.Code != "request_timeout" {
				t.Errorf("got %d %+v, want 408 request_timeout", resp.StatusCode, e)
			}
		})
	}

	// A body that comes in steadily, if slowly, is read whole although it
	// takes longer than BodyTimeout: the request then fails for want of a
	// caller, past the body.
	t.Run("slow steady body", func(t *testing.T) {
		t.Parallel()
		body := `{"messages":[{"role":"user","content":"hi"}]}`
		pr, pw := io.Pipe()
		go func() {
			for i := range len(body) {
				time.Sleep(20 * time.Millisecond) // 46 bytes: about 1 s
				if _, err := pw.Write([]byte{body[i]}); err != nil {
					return
				}
			}
			pw.Close()
		}()
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(len(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			b, _ := io.ReadAll(resp.Body)
			t.Errorf("got %d %s, want 503 for want of a caller", resp.StatusCode, b)
		}
	})
}

// startFakeCaller serves fake as the one caller instance and returns a pool
// connected to it: the real RPC layer, with a fake only where the caller
// tier would be.
func startFakeCaller(t *testing.T, fake *meshtest.Caller) *rpc.Pool {
	t.Helper()
	return meshtest.Pool(t, discovery.ServiceCaller, rpc.PoolConfig{}, fake.Serve(t))
}

// TestModels reads the model list and single models: "created" is the
// model file's time as inference reports it, and an unknown id is a 404
// model_not_found.
func TestModels(t *testing.T) {
	t.Parallel()
	pool := startFakeCaller(t, &meshtest.Caller{Report: mesh.CallerStatus{Inference: []mesh.InferenceStatus{
		{Addr: "10.0.0.1:7003", Error: "not connected"},
		{Addr: "10.0.0.2:7003", Model: "tiny", Created: 1_700_000_000},
		{Addr: "10.0.0.3:7003", Model: "tiny", Created: 1_700_000_000},
	}}})
	srv := serveGateway(t, Config{Caller: pool}, nil)

	get := func(path string, v any) *http.Response {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			return resp
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
		return resp
	}

	var list openai.ModelList
	if resp := get("/v1/models", &list); resp.StatusCode != http.StatusOK {
		t.Fatalf("/v1/models: %d", resp.StatusCode)
	}
	want := openai.NewModel("tiny", 1_700_000_000, "slm-mesh")
	if len(list.Data) != 1 || list.Data[0] != want || list.Object != "list" {
		t.Errorf("/v1/models: %+v, want just %+v", list, want)
	}

	var m openai.Model
	if resp := get("/v1/models/tiny", &m); resp.StatusCode != http.StatusOK || m != want {
		t.Errorf("/v1/models/tiny: %d %+v, want %+v", resp.StatusCode, m, want)
	}

	resp := get("/v1/models/gpt-9", nil)
	if e := readError(t, resp); resp.StatusCode != http.StatusNotFound || e.Code != "model_not_found" || !strings.Contains(e.Message, "gpt-9") {
		t.Errorf("/v1/models/gpt-9: %d %+v, want 404 model_not_found", resp.StatusCode, e)
	}
}

// TestUpstreamErrors has the caller refuse chat requests with the errors
// the services send, and checks what the client gets: param and reason
// from the service, and its Retry-After rounded up to whole seconds, else
// the one default (openai.DefaultRetryAfter).
func TestUpstreamErrors(t *testing.T) {
	t.Parallel()
	refusals := map[string]*chat.Error{
		"context": {Code: chat.CodeInvalidArgument, Message: "the prompt is 900 tokens", Param: "messages", Reason: "context_length_exceeded"},
		"busy":    {Code: chat.CodeOverloaded, Message: "queue full", RetryAfter: 1500 * time.Millisecond},
		"full":    {Code: chat.CodeOverloaded, Message: "queue full"},
		"down":    {Code: chat.CodeUnavailable, Message: "dial tcp 10.0.0.1:7003: refused", RetryAfter: 3 * time.Second},
		"secret":  {Code: chat.CodeInternal, Message: "dial tcp 10.0.0.1:7003", Param: "messages", Reason: "x"},
	}
	pool := startFakeCaller(t, &meshtest.Caller{
		Generate: func(_ context.Context, req chat.Request, _ func(chat.Delta) error) (chat.Result, error) {
			return chat.Result{}, refusals[req.Messages[0].Content]
		},
	})
	srv := serveGateway(t, Config{Caller: pool}, nil)
	tests := []struct {
		content          string
		status           int
		typ, param, code string
		retryAfter       string
	}{
		{"context", 400, openai.TypeInvalidRequest, "messages", "context_length_exceeded", ""},
		{"busy", 429, openai.TypeRateLimit, "", "rate_limit_exceeded", "2"},
		{"full", 429, openai.TypeRateLimit, "", "rate_limit_exceeded", strconv.Itoa(openai.DefaultRetryAfter)},
		{"down", 503, openai.TypeServer, "", "service_unavailable", "3"},
		{"secret", 500, openai.TypeServer, "", "", ""},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			t.Run(tt.content+" stream "+strconv.FormatBool(stream), func(t *testing.T) {
				t.Parallel()
				body := fmt.Sprintf(`{"stream":%v,"messages":[{"role":"user","content":%q}]}`, stream, tt.content)
				resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				var e openai.Error
				if err := json.Unmarshal(raw, &e); err != nil {
					t.Fatalf("%d %q: %v", resp.StatusCode, raw, err)
				}
				if resp.StatusCode != tt.status || e.Type != tt.typ || e.Param != tt.param || e.Code != tt.code ||
					resp.Header.Get("Retry-After") != tt.retryAfter {
					t.Errorf("got %d %s Retry-After %q\nwant %d type %s param %q code %q Retry-After %q",
						resp.StatusCode, raw, resp.Header.Get("Retry-After"), tt.status, tt.typ, tt.param, tt.code, tt.retryAfter)
				}
				if strings.Contains(string(raw), "10.0.0.1") {
					t.Errorf("internal detail in %s", raw)
				}
			})
		}
	}
}
