package engine

import (
	"errors"
	"fmt"
	"time"
)

// Errors a caller can check with errors.Is. Every error the engine returns
// for a request it refuses is an *Error wrapping one of them; the inference
// service maps them to RPC codes in one place.
var (
	// ErrInvalid: the request can never be served (empty, too long for the
	// context, bad parameters).
	ErrInvalid = errors.New("invalid request")
	// ErrOverloaded: every sequence is busy and the queue is full.
	ErrOverloaded = errors.New("overloaded")
	// ErrClosed: the engine is draining or closed and takes no new work.
	ErrClosed = errors.New("engine is shutting down")
)

// Reasons an *Error may give, machine-readable, as the OpenAI API names them.
const (
	// ReasonContextLength: the prompt, or the prompt and max_tokens, do not
	// fit in the context a request may use.
	ReasonContextLength = "context_length_exceeded"
)

// Error is a request the engine refuses, with what a client needs to act
// on it. Find it with errors.As; errors.Is(err, ErrInvalid) and the like
// hold through it.
type Error struct {
	// Kind is ErrInvalid, ErrOverloaded or ErrClosed.
	Kind error
	// Message says what is wrong, for people; it never holds internal
	// detail.
	Message string
	// Param names the request field at fault ("messages", "max_tokens",
	// "temperature"), if one is.
	Param string
	// Reason is one of the Reason* constants, or empty.
	Reason string
	// RetryAfter, for ErrOverloaded, is how long the queue is expected to
	// take to make room; zero when unknown.
	RetryAfter time.Duration
}

// Error implements error as "kind: message".
func (e *Error) Error() string { return e.Kind.Error() + ": " + e.Message }

// Unwrap returns Kind.
func (e *Error) Unwrap() error { return e.Kind }

// invalidf is an ErrInvalid *Error about param.
func invalidf(param, format string, args ...any) *Error {
	return &Error{Kind: ErrInvalid, Param: param, Message: fmt.Sprintf(format, args...)}
}
