package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
)

var errTest = errors.New("test error")

func TestCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want ErrorCode
	}{
		{"nil", nil, ""},
		{"an Error", Errorf(CodeNotFound, "no model"), CodeNotFound},
		{"a wrapped Error", fmt.Errorf("engine: %w", Errorf(CodeOverloaded, "busy")), CodeOverloaded},
		{"an Error without a code", &Error{Message: "?"}, CodeInternal},
		{"canceled", context.Canceled, CodeCanceled},
		{"wrapped deadline", fmt.Errorf("decode: %w", context.DeadlineExceeded), CodeDeadlineExceeded},
		{"other", errTest, CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Code(tt.err); got != tt.want {
				t.Errorf("Code(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

// TestErrorfWraps proves errors.As finds *Error through wrapping and that a
// %w cause stays reachable locally.
func TestErrorfWraps(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("call caller: %w", Errorf(CodeUnavailable, "dial: %w", errTest))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("errors.As found no *Error in %v", err)
	}
	if e.Code != CodeUnavailable || e.Message != "dial: test error" {
		t.Errorf("got %+v", e)
	}
	if !errors.Is(err, errTest) {
		t.Errorf("cause not reachable through %v", err)
	}
	if got := e.Error(); got != "unavailable: dial: test error" {
		t.Errorf("Error() = %q", got)
	}
}

// TestErrorJSON proves an Error survives its JSON whole, but for its local
// cause, and that an empty attribute is left out.
func TestErrorJSON(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  *Error
		json string
	}{
		{&Error{Code: CodeOverloaded, Message: "queue full", Param: "messages", Reason: "queue_full", RetryAfter: 1500 * time.Millisecond},
			`{"code":"overloaded","message":"queue full","param":"messages","reason":"queue_full","retry_after_ms":1500}`},
		{Errorf(CodeUnavailable, "dial: %w", errTest), `{"code":"unavailable","message":"dial: test error"}`},
	} {
		b, err := json.Marshal(tt.err)
		if err != nil || string(b) != tt.json {
			t.Errorf("%+v encodes to %s (%v), want %s", tt.err, b, err, tt.json)
		}
		var got Error
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		want := *tt.err
		want.cause = nil
		if got != want {
			t.Errorf("%s decodes to %+v, want %+v", b, got, want)
		}
	}
	var e Error
	if err := json.Unmarshal([]byte(`{"type":"error","id":3,"code":"overloaded","retry_after_ms":-5}`), &e); err != nil || e.Code != CodeOverloaded || e.RetryAfter != 0 {
		t.Errorf("a frame's fields decode to %+v, %v; want the code, and no negative RetryAfter", e, err)
	}
}
