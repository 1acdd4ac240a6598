package rpc

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestCodeOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want Code
	}{
		{"nil", nil, ""},
		{"rpc error", Errorf(CodeNotFound, "no model"), CodeNotFound},
		{"wrapped rpc error", fmt.Errorf("engine: %w", Errorf(CodeOverloaded, "busy")), CodeOverloaded},
		{"canceled", context.Canceled, CodeCanceled},
		{"wrapped deadline", fmt.Errorf("decode: %w", context.DeadlineExceeded), CodeDeadlineExceeded},
		{"other", errTest, CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CodeOf(tt.err); got != tt.want {
				t.Errorf("CodeOf(%v) = %q, want %q", tt.err, got, tt.want)
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
