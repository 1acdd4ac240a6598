package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// TestHostileRequests sends the gateway requests built to break it, each of
// which must be refused before anything is forwarded, with its status and
// an OpenAI error envelope. The gateway has its default limits (1 MiB body,
// 256 messages, 200,000 characters) and no caller: a request that got
// through would fail with 503 instead.
func TestHostileRequests(t *testing.T) {
	t.Parallel()
	srv := startGateway(t)
	user := `"messages":[{"role":"user","content":"hi"}]`
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	tests := []struct {
		name    string
		body    string
		status  int
		param   string // the field the error names
		code    string
		message string // a part of the message
	}{
		// Bytes that are not UTF-8, or not JSON text.
		{"invalid UTF-8 in a string", `{"messages":[{"role":"user","content":"caf` + "\xe9" + `"}]}`, 400, "", "", "UTF-8"},
		{"invalid UTF-8 outside strings", "\xff\xfe{" + user + "}", 400, "", "", "UTF-8"},
		{"byte order mark", "\xef\xbb\xbf{" + user + "}", 400, "", "", "not valid JSON"},
		{"raw NUL in a string", `{"messages":[{"role":"user","content":"a` + "\x00" + `b"}]}`, 400, "", "", "not valid JSON"},
		{"raw NUL between values", "{" + user + ",\x00}", 400, "", "", "not valid JSON"},
		{"NaN", `{"temperature":NaN,` + user + `}`, 400, "", "", "not valid JSON"},
		{"Infinity", `{"temperature":Infinity,` + user + `}`, 400, "", "", "not valid JSON"},
		{"two objects", `{` + user + `}{` + user + `}`, 400, "", "", "not valid JSON"},

		// Nesting: encoding/json refuses past 10,000 levels; below that a
		// nested value is an unknown field (ignored) or the wrong type.
		{"nested 100,000 deep", `{"x":` + deep(100_000) + `,` + user + `}`, 400, "", "", "not valid JSON"},
		{"nested stop", `{"stop":` + deep(5000) + `,` + user + `}`, 400, "stop", "", "array of strings"},
		{"nested messages", `{"messages":` + deep(5000) + `}`, 400, "messages[0]", "", "expected an object"},
		{"nested content", `{"messages":[{"role":"user","content":` + deep(5000) + `}]}`, 400, "messages[0].content[0]", "", "expected an object"},

		// Sizes: refused by the gateway's limits, not by the model's context.
		{"10,000 messages", `{"messages":[` + strings.Repeat(`{"role":"user","content":"hi"},`, 9999) + `{"role":"user","content":"hi"}]}`,
			400, "messages", "", "Too many messages: 10000"},
		{"a 1 MB message", `{"messages":[{"role":"user","content":"` + strings.Repeat("a", 1_000_000) + `"}]}`,
			400, "messages", "", "1000000 characters"},
		{"characters counted, not bytes", `{"messages":[{"role":"user","content":"` + strings.Repeat("é", 200_001) + `"}]}`,
			400, "messages", "", "200001 characters"},

		// Numbers out of range or not numbers at all.
		{"negative max_tokens", `{"max_tokens":-1,` + user + `}`, 400, "max_tokens", "", "at least 1"},
		{"huge max_tokens", `{"max_tokens":99999999999999999999,` + user + `}`, 400, "max_tokens", "", "expected an integer"},
		{"max_tokens overflowing int32", `{"max_completion_tokens":-2147483649,` + user + `}`, 400, "max_completion_tokens", "", "at least 1"},
		{"temperature 1e999", `{"temperature":1e999,` + user + `}`, 400, "temperature", "", "expected a number"},
		{"temperature as a NaN string", `{"temperature":"NaN",` + user + `}`, 400, "temperature", "", "expected a number"},
		{"negative temperature", `{"temperature":-1e-9,` + user + `}`, 400, "temperature", "", "[0, 2]"},
		{"top_p just above 1", `{"top_p":1.0000001,` + user + `}`, 400, "top_p", "", "(0, 1]"},
		{"top_p that is 0 in float32", `{"top_p":1e-50,` + user + `}`, 400, "top_p", "", "(0, 1]"},
		{"seed beyond int64", `{"seed":9223372036854775808,` + user + `}`, 400, "seed", "", "expected an integer"},
		{"seed fraction", `{"seed":0.5,` + user + `}`, 400, "seed", "", "expected an integer"},
		{"n negative", `{"n":-1,` + user + `}`, 400, "n", "", "only 1"},

		// Wrong types.
		{"body a string", `"hi"`, 400, "", "", "must be a JSON object"},
		{"body null", `null`, 400, "messages", "", "non-empty"},
		{"messages an object", `{"messages":{"role":"user","content":"hi"}}`, 400, "messages", "", "expected an array"},
		{"message a number", `{"messages":[1]}`, 400, "messages[0]", "", "expected an object"},
		{"role a number", `{"messages":[{"role":1,"content":"hi"}]}`, 400, "messages[0].role", "", "expected a string"},
		{"content a boolean", `{"messages":[{"role":"user","content":true}]}`, 400, "messages[0].content", "", "got a boolean"},
		{"content part a string", `{"messages":[{"role":"user","content":["hi"]}]}`, 400, "messages[0].content[0]", "", "expected an object"},
		{"stop a number", `{"stop":7,` + user + `}`, 400, "stop", "", "got a number"},
		{"model an array", `{"model":["m"],` + user + `}`, 400, "model", "", "expected a string"},
		{"stream a number", `{"stream":1,` + user + `}`, 400, "stream", "", "expected a boolean"},

		// Roles and messages.
		{"unknown role", `{"messages":[{"role":"hacker","content":"hi"}]}`, 400, "messages[0].role", "", `"hacker"`},
		{"role in capitals", `{"messages":[{"role":"User","content":"hi"}]}`, 400, "messages[0].role", "", `"User"`},
		{"empty role", `{"messages":[{"role":"","content":"hi"}]}`, 400, "messages[0].role", "", "Missing"},
		{"tool message answering nothing", `{"messages":[{"role":"tool","content":"hi","tool_call_id":"call_1"}]}`, 400, "messages[0].tool_call_id", "", "answers no tool call"},
		{"empty messages", `{"messages":[]}`, 400, "messages", "", "non-empty"},
		{"no body", ``, 400, "", "", "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			e := readError(t, resp)
			if resp.StatusCode != tt.status || e.Param != tt.param || e.Code != tt.code || !strings.Contains(e.Message, tt.message) {
				t.Errorf("got %d %+v\nwant %d param %q code %q, message with %q", resp.StatusCode, e, tt.status, tt.param, tt.code, tt.message)
			}
		})
	}
}

// TestHugeBodyNotRead sends a 100 MB body: the gateway must answer 413 after
// reading about its limit, not the whole body.
func TestHugeBodyNotRead(t *testing.T) {
	t.Parallel()
	srv := startGateway(t)
	for _, declared := range []bool{true, false} { // Content-Length, or chunked
		t.Run(fmt.Sprintf("Content-Length %v", declared), func(t *testing.T) {
			t.Parallel()
			const size = 100 << 20
			body := &endlessBody{}
			body.left.Store(size)
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", body)
			if err != nil {
				t.Fatal(err)
			}
			if declared {
				req.ContentLength = size
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			e := readError(t, resp)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || e.Code != "request_too_large" {
				t.Errorf("got %d %+v, want 413 request_too_large", resp.StatusCode, e)
			}
			// The limit, plus what the sockets' buffers took before the
			// gateway hung up.
			if sent := size - body.left.Load(); sent > 32<<20 {
				t.Errorf("the gateway took %d MB of the body before answering", sent>>20)
			}
		})
	}
}

// startGateway serves a gateway with default limits and a caller pool with
// no instances, on loopback.
func startGateway(t *testing.T) *httptest.Server {
	t.Helper()
	pool := rpc.NewPool(discovery.NewStatic(), discovery.ServiceCaller, rpc.PoolConfig{ConnectWait: 10 * time.Millisecond})
	t.Cleanup(func() { pool.Close() })
	return serveGateway(t, Config{Caller: pool}, nil)
}

// serveGateway serves a gateway with cfg on loopback as the service does:
// through its WrapListener. configure, if not nil, sets up the http.Server
// (timeouts) before it starts.
func serveGateway(t *testing.T, cfg Config, configure func(*http.Server)) *httptest.Server {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(g)
	srv.Listener = g.WrapListener(srv.Listener)
	if configure != nil {
		configure(srv.Config)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// apiError is the body of an OpenAI error envelope.
type apiError struct {
	Message, Type, Param, Code string
}

// readError reads resp's body, which must be an OpenAI error envelope: JSON
// {"error":{...}} with exactly message, type, param and code, the last two
// a string or null.
func readError(t *testing.T, resp *http.Response) apiError {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	var env map[string]map[string]*string
	if err := json.Unmarshal(body, &env); err != nil || len(env) != 1 || len(env["error"]) != 4 {
		t.Fatalf("%d %q is not an OpenAI error envelope (%v)", resp.StatusCode, body, err)
	}
	var e apiError
	for key, dst := range map[string]*string{"message": &e.Message, "type": &e.Type, "param": &e.Param, "code": &e.Code} {
		v, ok := env["error"][key]
		if !ok {
			t.Fatalf("%q has no %s", body, key)
		}
		if v != nil {
			*dst = *v
		}
	}
	if e.Message == "" || e.Type != "invalid_request_error" {
		t.Errorf("error %+v: want a message and type invalid_request_error", e)
	}
	return e
}

// endlessBody is a request body of left bytes: the start of a chat request
// whose one content never ends.
type endlessBody struct {
	left atomic.Int64 // read by the test while the client reads the body
	sent int
}

func (b *endlessBody) Read(p []byte) (int, error) {
	n := int(min(int64(len(p)), b.left.Load()))
	if n == 0 {
		return 0, io.EOF
	}
	const head = `{"messages":[{"role":"user","content":"`
	for i := range p[:n] {
		if j := b.sent + i; j < len(head) {
			p[i] = head[j]
		} else {
			p[i] = 'a'
		}
	}
	b.sent += n
	b.left.Add(int64(-n))
	return n, nil
}
