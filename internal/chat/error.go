package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// ErrorCode classifies a failure. Codes travel between the tiers
// unchanged, so a code set by the inference engine reaches the gateway,
// which turns it into an HTTP status (the one table in internal/openai).
type ErrorCode string

// The codes a request can fail with. A peer treats a code it does not know
// as CodeInternal.
const (
	// CodeInvalidArgument: the request is malformed or breaks a limit;
	// sent again unchanged it will fail again.
	CodeInvalidArgument ErrorCode = "invalid_argument"
	// CodeNotFound: no such method, or no such model or resource.
	CodeNotFound ErrorCode = "not_found"
	// CodeOverloaded: the callee is at capacity, or the caller read a
	// stream too slowly; a retry later may succeed.
	CodeOverloaded ErrorCode = "overloaded"
	// CodeUnavailable: no connection, the connection was lost, or the
	// callee is loading or shutting down; another instance may succeed.
	CodeUnavailable ErrorCode = "unavailable"
	// CodeDeadlineExceeded: the request's deadline passed.
	CodeDeadlineExceeded ErrorCode = "deadline_exceeded"
	// CodeCanceled: the caller gave up.
	CodeCanceled ErrorCode = "canceled"
	// CodeInternal: anything else; the detail is in the log of the service
	// where it happened.
	CodeInternal ErrorCode = "internal"
)

// Reasons an Error may give, machine-readable, as the OpenAI API names them.
const (
	// ReasonContextLength: the prompt, or the prompt and max_tokens, do not
	// fit in the context a request may use.
	ReasonContextLength = "context_length_exceeded"
)

// Error is a failure as every tier sees it, from where it is born (a
// request's validation, the engine, the RPC transport) to the gateway that
// answers the client. It crosses the tiers whole: the rpc package sends its
// JSON in an error frame, and the gateway's one table (internal/openai)
// decides what of it a client is shown. Find it with errors.As, or ask
// Code.
//
// An attribute added here with a JSON name travels without further edits;
// only the table decides whether a client sees it.
type Error struct {
	Code ErrorCode `json:"code"`
	// Message says what is wrong, for people. Codes that describe the
	// client's request (invalid_argument, not_found, overloaded) show it
	// to the client as it is, so it names fields as the client did and
	// holds no internal detail.
	Message string `json:"message"`
	// Param names the request field at fault, as the client named it
	// ("messages", "temperature", "messages[2].role", "max_tokens").
	Param string `json:"param,omitempty"`
	// Reason, one of the Reason* constants, refines Code for machines.
	Reason string `json:"reason,omitempty"`
	// RetryAfter, when positive, is how long the callee expects the client
	// to wait before a retry may succeed. It travels in milliseconds
	// (retry_after_ms).
	RetryAfter time.Duration `json:"-"`
	// cause is the local error behind this one, if any (a context error, a
	// network error). It never leaves the process.
	cause error
}

// Errorf returns an Error with code and a message formatted like
// fmt.Errorf; an error wrapped with %w stays reachable through errors.Is
// and errors.As in this process.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return Wrap(errors.Unwrap(err), code, err.Error())
}

// Wrap is an Error with code and message over cause, which stays reachable
// through errors.Is and errors.As in this process.
func Wrap(cause error, code ErrorCode, message string) *Error {
	return &Error{Code: code, Message: message, cause: cause}
}

// Invalidf is a CodeInvalidArgument Error about the request field param.
func Invalidf(param, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidArgument, Param: param, Message: fmt.Sprintf(format, args...)}
}

// Error implements error as "code: message".
func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Unwrap returns the local cause, so that errors.Is(err, context.Canceled)
// holds for a call that failed because its context was canceled.
func (e *Error) Unwrap() error { return e.cause }

// Code returns the code of err: that of the first *Error in its chain
// (CodeInternal if it has none); CodeCanceled or CodeDeadlineExceeded for
// a context's errors; CodeInternal for any other error; and "" for nil.
func Code(err error) ErrorCode {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		if e.Code == "" {
			return CodeInternal
		}
		return e.Code
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadlineExceeded
	default:
		return CodeInternal
	}
}

// errorFields is Error without its methods, so that its JSON is encoding/json's.
type errorFields Error

// errorJSON is an Error as it travels: its fields, and RetryAfter in
// milliseconds.
type errorJSON struct {
	*errorFields
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
}

// MarshalJSON encodes e as
//
//	{"code":"overloaded","message":"…","param":"…","reason":"…","retry_after_ms":1500}
//
// with param, reason and retry_after_ms left out when empty.
func (e *Error) MarshalJSON() ([]byte, error) {
	return json.Marshal(errorJSON{(*errorFields)(e), e.RetryAfter.Milliseconds()})
}

// UnmarshalJSON decodes what MarshalJSON encodes; other fields are ignored,
// so an Error can be read from a larger object (an RPC error frame).
func (e *Error) UnmarshalJSON(data []byte) error {
	var w errorJSON
	w.errorFields = (*errorFields)(e)
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	// Past some 292 years a duration would overflow; no wait is that long.
	e.RetryAfter = time.Duration(min(max(w.RetryAfterMS, 0), math.MaxInt64/int64(time.Millisecond))) * time.Millisecond
	return nil
}
