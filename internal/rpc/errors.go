package rpc

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Code classifies an RPC failure. Codes travel in error frames unchanged, so
// a code set by the inference service reaches the gateway, which turns it
// into an HTTP status (openai.FromCode is the one place that does).
type Code string

// The codes a call can fail with. Peers must treat an unknown code as
// CodeInternal.
const (
	// CodeInvalidArgument: the request is malformed or breaks a limit; retrying
	// it unchanged will fail again.
	CodeInvalidArgument Code = "invalid_argument"
	// CodeNotFound: no such method, or no such model or resource.
	CodeNotFound Code = "not_found"
	// CodeOverloaded: the callee is at capacity, or the caller read a stream
	// too slowly; a retry later may succeed.
	CodeOverloaded Code = "overloaded"
	// CodeUnavailable: no connection, the connection was lost, or the callee
	// is shutting down; another instance may succeed.
	CodeUnavailable Code = "unavailable"
	// CodeDeadlineExceeded: the call's deadline passed.
	CodeDeadlineExceeded Code = "deadline_exceeded"
	// CodeCanceled: the caller gave up on the call.
	CodeCanceled Code = "canceled"
	// CodeInternal: anything else; the detail is in the callee's log.
	CodeInternal Code = "internal"
)

// Error is an RPC failure with a code. Handlers return it to choose the code
// and message the peer sees; Conn.Call and Pool.Call return it for every
// failure that happened in the RPC layer or on the peer. Find it in a chain
// of wrapped errors with errors.As, or just ask CodeOf.
type Error struct {
	Code    Code
	Message string
	// Param, when set, names the request field at fault, in the client's
	// terms ("messages", "max_tokens"); the gateway reports it as the
	// OpenAI error's param.
	Param string
	// Reason, when set, is a machine-readable refinement of Code, such as
	// "context_length_exceeded"; the gateway reports it as the OpenAI
	// error's code.
	Reason string
	// RetryAfter, when positive, is how long the callee suggests waiting
	// before retrying (CodeOverloaded, CodeUnavailable).
	RetryAfter time.Duration
	// cause is the local error behind this one, if any (a context error, a
	// network error). It never travels to the peer.
	cause error
}

// Errorf returns an *Error with code and a message formatted like
// fmt.Errorf; an error wrapped with %w stays reachable through errors.Is and
// errors.As on this side of the connection.
func Errorf(code Code, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Message: err.Error(), cause: errors.Unwrap(err)}
}

// Error implements error as "code: message".
func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Unwrap returns the local cause, so errors.Is(err, context.Canceled) holds
// for a call that failed because its context was canceled.
func (e *Error) Unwrap() error { return e.cause }

// CodeOf returns the code of err: the code of the first *Error in its chain;
// CodeCanceled or CodeDeadlineExceeded for context errors; CodeInternal for
// any other error; and "" for nil.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadlineExceeded
	default:
		return CodeInternal
	}
}

// contextError turns the error of a finished context into an *Error that
// still unwraps to it.
func contextError(method string, err error) error {
	return &Error{Code: CodeOf(err), Message: fmt.Sprintf("call %s: %v", method, err), cause: err}
}
