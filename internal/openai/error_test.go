package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

func TestErrorJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"param and code null when empty", InvalidRequest("", "bad"),
			`{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}`},
		{"param and code set", Unsupported("tools"),
			`{"error":{"message":"Unsupported parameter: 'tools' is not supported by this server.","type":"invalid_request_error","param":"tools","code":"unsupported_parameter"}}`},
		{"status and retry are not in the body", Overloaded("busy", 3),
			`{"error":{"message":"busy","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := json.Marshal(tt.err)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			var back Error
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if back.Message != tt.err.Message || back.Type != tt.err.Type || back.Param != tt.err.Param || back.Code != tt.err.Code {
				t.Errorf("read back %+v, want %+v", back, *tt.err)
			}
		})
	}
}

func TestErrorIsAnError(t *testing.T) {
	t.Parallel()
	var err error = fmt.Errorf("decoding: %w", InvalidRequest("stop", "too many"))
	var e *Error
	if !errors.As(err, &e) || e.Param != "stop" {
		t.Fatalf("errors.As found %v", e)
	}
	if got := e.Error(); !strings.Contains(got, "400") || !strings.Contains(got, "stop") || !strings.Contains(got, "too many") {
		t.Errorf("Error() = %q", got)
	}
}

func TestConstructors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err              *Error
		status           int
		typ, code, param string
	}{
		{InvalidRequest("model", "m"), 400, TypeInvalidRequest, "", "model"},
		{Unsupported("logprobs"), 400, TypeInvalidRequest, "unsupported_parameter", "logprobs"},
		{Unauthorized("Incorrect API key provided."), 401, TypeInvalidRequest, "invalid_api_key", ""},
		{ModelNotFound("gpt-9"), 404, TypeInvalidRequest, "model_not_found", ""},
		{UnknownRoute("POST", "/v1/nope"), 404, TypeInvalidRequest, "unknown_url", ""},
		{MethodNotAllowed("GET", "/v1/chat/completions"), 405, TypeInvalidRequest, "method_not_allowed", ""},
		{BodyTooLarge(1 << 20), 413, TypeInvalidRequest, "request_too_large", ""},
		{Overloaded("", 2), 429, TypeRateLimit, "rate_limit_exceeded", ""},
		{Timeout(""), 504, TypeServer, "timeout", ""},
		{Internal(), 500, TypeServer, "", ""},
	}
	for _, tt := range tests {
		e := tt.err
		if e.Status != tt.status || e.Type != tt.typ || e.Code != tt.code || e.Param != tt.param || e.Message == "" {
			t.Errorf("%+v: want status %d type %q code %q param %q and a message", *e, tt.status, tt.typ, tt.code, tt.param)
		}
	}
	if e := Overloaded("", 2); e.RetryAfter != 2 {
		t.Errorf("Overloaded RetryAfter = %d, want 2", e.RetryAfter)
	}
	if e := ModelNotFound("gpt-9"); !strings.Contains(e.Message, "gpt-9") {
		t.Errorf("ModelNotFound message %q does not name the model", e.Message)
	}
	if e := UnknownRoute("POST", "/v1/nope"); e.Message != "Invalid URL (POST /v1/nope)" {
		t.Errorf("UnknownRoute message %q", e.Message)
	}
}

func TestFromError(t *testing.T) {
	t.Parallel()
	const secret = "dial tcp 10.1.2.3:7000: connection refused"
	tests := []struct {
		code, msg  string
		status     int
		typ, ecode string
		// wantMsg is the message the client sees; "" means a fixed text
		// that must not contain msg.
		wantMsg    string
		retryAfter int
	}{
		{"invalid_argument", "prompt is longer than the context", 400, TypeInvalidRequest, "", "prompt is longer than the context", 0},
		{"not_found", "The model `x` does not exist.", 404, TypeInvalidRequest, "model_not_found", "The model `x` does not exist.", 0},
		{"overloaded", "queue full", 429, TypeRateLimit, "rate_limit_exceeded", "queue full", DefaultRetryAfter},
		{"unavailable", secret, 503, TypeServer, "service_unavailable", "", DefaultRetryAfter},
		{"deadline_exceeded", secret, 504, TypeServer, "timeout", "", 0},
		{"canceled", secret, 503, TypeServer, "request_canceled", "", DefaultRetryAfter},
		{"internal", secret, 500, TypeServer, "", "", 0},
		{"something_new", secret, 500, TypeServer, "", "", 0},
		{"", "", 500, TypeServer, "", "", 0},
	}
	for _, tt := range tests {
		e := FromError(&chat.Error{Code: chat.ErrorCode(tt.code), Message: tt.msg})
		if e.Status != tt.status || e.Type != tt.typ || e.Code != tt.ecode || e.RetryAfter != tt.retryAfter {
			t.Errorf("FromError(%q) = %+v, want status %d type %q code %q retry %d",
				tt.code, *e, tt.status, tt.typ, tt.ecode, tt.retryAfter)
		}
		switch {
		case tt.wantMsg != "" && e.Message != tt.wantMsg:
			t.Errorf("FromError(%q) message %q, want %q", tt.code, e.Message, tt.wantMsg)
		case tt.wantMsg == "" && (e.Message == "" || strings.Contains(e.Message, "10.1.2.3")):
			t.Errorf("FromError(%q) message %q: want a fixed text without internal detail", tt.code, e.Message)
		}
	}
	// Codes whose message is passed on still get one when it is empty.
	for _, code := range []string{"invalid_argument", "not_found", "overloaded"} {
		if e := FromError(&chat.Error{Code: chat.ErrorCode(code)}); e.Message == "" {
			t.Errorf("FromError(%q, \"\") has no message", code)
		}
	}
	// A context's error, and a wrapped one, have their code's row.
	if e := FromError(fmt.Errorf("call: %w", context.Canceled)); e.Status != 503 || e.Code != "request_canceled" {
		t.Errorf("a canceled context: %+v", *e)
	}
	if e := FromError(fmt.Errorf("call: %w", chat.Invalidf("stop", "bad stop"))); e.Status != 400 || e.Param != "stop" || e.Message != "bad stop" {
		t.Errorf("a wrapped invalid_argument: %+v", *e)
	}
	// The gateway turns the status into a header; check it is a real one.
	if http.StatusText(FromError(&chat.Error{Code: "canceled"}).Status) == "" {
		t.Error("canceled maps to a non-standard status")
	}
}

// TestFromErrorDetail checks that a service's param, reason and retry-after
// reach the client where they mean something, and nowhere else.
func TestFromErrorDetail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		in          *chat.Error
		param, code string
		retryAfter  int
	}{
		{"context overflow", &chat.Error{Code: "invalid_argument", Message: "too long", Param: "messages", Reason: "context_length_exceeded"},
			"messages", "context_length_exceeded", 0},
		{"invalid without detail", &chat.Error{Code: "invalid_argument", Message: "bad"}, "", "", 0},
		{"unknown model", &chat.Error{Code: "not_found", Message: "no such model", Param: "model", Reason: "whatever"}, "model", "model_not_found", 0},
		{"retry after 1.5s rounds up", &chat.Error{Code: "overloaded", RetryAfter: 1500 * time.Millisecond}, "", "rate_limit_exceeded", 2},
		{"retry after 1ms is 1s", &chat.Error{Code: "overloaded", RetryAfter: time.Millisecond}, "", "rate_limit_exceeded", 1},
		{"retry after 7s", &chat.Error{Code: "unavailable", RetryAfter: 7 * time.Second}, "", "service_unavailable", 7},
		{"a model with no instance ready", &chat.Error{Code: "unavailable", Message: "The model `m` has no instance ready.", Param: "model"}, "model", "service_unavailable", DefaultRetryAfter},
		{"no retry after: the default", &chat.Error{Code: "overloaded"}, "", "rate_limit_exceeded", DefaultRetryAfter},
		{"overload keeps its code and no param", &chat.Error{Code: "overloaded", Param: "messages", Reason: "queue_full"}, "", "rate_limit_exceeded", DefaultRetryAfter},
		{"internal keeps nothing", &chat.Error{Code: "internal", Param: "messages", Reason: "oops", RetryAfter: time.Second}, "", "", 0},
		{"retry after only on 429 and 503", &chat.Error{Code: "invalid_argument", RetryAfter: time.Second}, "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := FromError(tt.in)
			if e.Param != tt.param || e.Code != tt.code || e.RetryAfter != tt.retryAfter {
				t.Errorf("FromError(%+v) = %+v, want param %q code %q retry %d", tt.in, *e, tt.param, tt.code, tt.retryAfter)
			}
		})
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]int{
		-time.Second: 0, 0: 0, time.Nanosecond: 1, time.Second: 1,
		time.Second + time.Nanosecond: 2, 2500 * time.Millisecond: 3, time.Minute: 60,
	} {
		if got := RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}
