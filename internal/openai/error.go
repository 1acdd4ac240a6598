package openai

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// Error types as the OpenAI API names them in error.type.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
)

// Error is an OpenAI-style API error. It marshals to the OpenAI envelope
//
//	{"error":{"message":"...","type":"...","param":null,"code":null}}
//
// with param and code null when empty, so it can be written as is, both as
// a response body and as the data of a stream's error event.
type Error struct {
	// Status is the HTTP status code the error is sent with.
	Status int
	// Message is meant for people; it never holds internal detail.
	Message string
	// Type is one of the Type* constants.
	Type string
	// Param names the offending request field, e.g. "messages[2].content".
	Param string
	// Code is a machine-readable reason such as "invalid_api_key".
	Code string
	// RetryAfter, when positive, is the number of seconds the client should
	// wait before retrying; the gateway sends it as a Retry-After header.
	RetryAfter int
}

// Error implements the error interface so that an *Error can travel through
// ordinary error returns and be found again with errors.As.
func (e *Error) Error() string {
	if e.Param != "" {
		return fmt.Sprintf("openai: %d %s (param %s): %s", e.Status, e.Type, e.Param, e.Message)
	}
	return fmt.Sprintf("openai: %d %s: %s", e.Status, e.Type, e.Message)
}

// wireError is the body of the envelope. Pointers give the JSON null that
// OpenAI sends for an absent param or code.
type wireError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

type errorEnvelope struct {
	Error wireError `json:"error"`
}

// MarshalJSON writes the OpenAI error envelope.
func (e *Error) MarshalJSON() ([]byte, error) {
	w := wireError{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		w.Param = &e.Param
	}
	if e.Code != "" {
		w.Code = &e.Code
	}
	return json.Marshal(errorEnvelope{Error: w})
}

// UnmarshalJSON reads the OpenAI error envelope; Status and RetryAfter are not
// part of it and stay unchanged. It exists so tests and Go clients of the
// gateway can read errors back.
func (e *Error) UnmarshalJSON(data []byte) error {
	var env errorEnvelope
	if err := json.Unmarshal(data, &env); err != nil {
		return err
	}
	e.Message, e.Type = env.Error.Message, env.Error.Type
	e.Param, e.Code = "", ""
	if env.Error.Param != nil {
		e.Param = *env.Error.Param
	}
	if env.Error.Code != nil {
		e.Code = *env.Error.Code
	}
	return nil
}

// InvalidRequest is a 400 for a request the client must change; param names
// the offending field and may be empty.
func InvalidRequest(param, message string) *Error {
	e := fromTable(chat.CodeInvalidArgument, message)
	e.Param = param
	return e
}

// Unsupported is a 400 for a parameter the client sent that this server does
// not implement. We refuse rather than ignore it: a client that asks for
// tools or logprobs would otherwise get an answer it cannot tell is wrong.
func Unsupported(param string) *Error {
	return &Error{
		Status:  http.StatusBadRequest,
		Type:    TypeInvalidRequest,
		Param:   param,
		Code:    "unsupported_parameter",
		Message: fmt.Sprintf("Unsupported parameter: '%s' is not supported by this server.", param),
	}
}

// Unauthorized is a 401 for a missing or wrong API key. The message should
// say which, but must never echo the key.
func Unauthorized(message string) *Error {
	return &Error{Status: http.StatusUnauthorized, Type: TypeInvalidRequest, Code: "invalid_api_key", Message: message}
}

// ModelNotFound is a 404 for a model this server does not serve.
func ModelNotFound(model string) *Error {
	return fromTable(chat.CodeNotFound, fmt.Sprintf("The model `%s` does not exist.", model))
}

// UnknownRoute is a 404 for a path the gateway does not serve, worded as
// OpenAI words it.
func UnknownRoute(method, path string) *Error {
	return &Error{
		Status:  http.StatusNotFound,
		Type:    TypeInvalidRequest,
		Code:    "unknown_url",
		Message: fmt.Sprintf("Invalid URL (%s %s)", method, path),
	}
}

// MethodNotAllowed is a 405 for a known path called with the wrong method.
func MethodNotAllowed(method, path string) *Error {
	return &Error{
		Status:  http.StatusMethodNotAllowed,
		Type:    TypeInvalidRequest,
		Code:    "method_not_allowed",
		Message: fmt.Sprintf("Method %s is not allowed for %s.", method, path),
	}
}

// BodyTooLarge is a 413 for a request body over limit bytes.
func BodyTooLarge(limit int64) *Error {
	return &Error{
		Status:  http.StatusRequestEntityTooLarge,
		Type:    TypeInvalidRequest,
		Code:    "request_too_large",
		Message: fmt.Sprintf("The request body is larger than the limit of %d bytes.", limit),
	}
}

// RequestTimeout is a 408 for a request that did not arrive in time, such as
// a body that stops coming.
func RequestTimeout(message string) *Error {
	return &Error{Status: http.StatusRequestTimeout, Type: TypeInvalidRequest, Code: "request_timeout", Message: message}
}

// Overloaded is a 429 for a service whose queue is full. retryAfter is in
// seconds; the OpenAI SDKs honour Retry-After on a 429 and retry by themselves.
func Overloaded(message string, retryAfter int) *Error {
	e := fromTable(chat.CodeOverloaded, message)
	e.RetryAfter = retryAfter
	return e
}

// Timeout is a 504 for a generation that ran out of time.
func Timeout(message string) *Error { return fromTable(chat.CodeDeadlineExceeded, message) }

// Internal is a 500. It takes no message on purpose: the cause belongs in the
// gateway's log, not in the client's response.
func Internal() *Error { return fromTable(chat.CodeInternal, "") }

// DefaultRetryAfter is the Retry-After, in seconds, of a 429 or 503 whose
// domain error did not say how long to wait: the one default. A queue
// drains within a token or two, so a short wait is enough.
const DefaultRetryAfter = 1

// The table is the one place where a domain error (chat.Error) becomes
// what a client sees. Its rows, by code, give the HTTP status, error.type,
// error.code and the message a client gets when the domain's is not
// shown; a code missing here is internal. Its columns, by attribute of the
// domain error, say which codes show the attribute and where the client
// sees it. The codes that describe the client's request (invalid_argument,
// not_found, overloaded) show the domain's message; the others may carry
// internal detail such as addresses and keep the row's.
var (
	rows = map[chat.ErrorCode]struct {
		status             int
		typ, code, message string
	}{
		chat.CodeInvalidArgument: {http.StatusBadRequest, TypeInvalidRequest, "", "The request is invalid."},
		// The only thing the services look up by name for a client is the
		// model, hence model_not_found.
		chat.CodeNotFound:         {http.StatusNotFound, TypeInvalidRequest, "model_not_found", "The model does not exist."},
		chat.CodeOverloaded:       {http.StatusTooManyRequests, TypeRateLimit, "rate_limit_exceeded", "The server is overloaded; please retry shortly."},
		chat.CodeUnavailable:      {http.StatusServiceUnavailable, TypeServer, "service_unavailable", "The service is temporarily unavailable; please retry shortly."},
		chat.CodeDeadlineExceeded: {http.StatusGatewayTimeout, TypeServer, "timeout", "The request timed out."},
		// A client that went away never reads this. A client still waiting
		// saw its request cancelled by us, e.g. during a shutdown, and
		// should retry elsewhere: hence 503 rather than a 4xx.
		chat.CodeCanceled: {http.StatusServiceUnavailable, TypeServer, "request_canceled", "The request was cancelled by the server; please retry."},
		chat.CodeInternal: {http.StatusInternalServerError, TypeServer, "", "The server had an error while processing your request."},
	}

	columns = []struct {
		codes []chat.ErrorCode
		show  func(e *Error, d *chat.Error)
	}{
		{ // Message: the domain's words, unless it has none.
			[]chat.ErrorCode{chat.CodeInvalidArgument, chat.CodeNotFound, chat.CodeOverloaded},
			func(e *Error, d *chat.Error) { e.Message = cmp.Or(d.Message, e.Message) },
		},
		{ // Param: error.param.
			[]chat.ErrorCode{chat.CodeInvalidArgument, chat.CodeNotFound},
			func(e *Error, d *chat.Error) { e.Param = d.Param },
		},
		{ // An unavailable error about a request field (the model it
			// names, with no instance ready) says so, in the domain's words
			// and param; other unavailable errors may carry addresses and
			// keep the row's.
			[]chat.ErrorCode{chat.CodeUnavailable},
			func(e *Error, d *chat.Error) {
				if d.Param != "" {
					e.Message, e.Param = cmp.Or(d.Message, e.Message), d.Param
				}
			},
		},
		{ // Reason: error.code, when it has one.
			[]chat.ErrorCode{chat.CodeInvalidArgument},
			func(e *Error, d *chat.Error) { e.Code = cmp.Or(d.Reason, e.Code) },
		},
		{ // RetryAfter: the Retry-After header, else the one default.
			[]chat.ErrorCode{chat.CodeOverloaded, chat.CodeUnavailable, chat.CodeCanceled},
			func(e *Error, d *chat.Error) {
				e.RetryAfter = cmp.Or(RetryAfterSeconds(d.RetryAfter), DefaultRetryAfter)
			},
		},
	}
)

// fromTable is code's row as an Error, with message when it is not empty.
func fromTable(code chat.ErrorCode, message string) *Error {
	row, ok := rows[code]
	if !ok {
		row = rows[chat.CodeInternal]
	}
	return &Error{Status: row.status, Type: row.typ, Code: row.code, Message: cmp.Or(message, row.message)}
}

// RetryAfterSeconds is d as a Retry-After value: whole seconds, rounded up,
// at least 1 (a Retry-After of 0 asks for an immediate retry, which is never
// what an overloaded service wants); 0 when d is not positive.
func RetryAfterSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return max(int((d+time.Second-1)/time.Second), 1)
}

// FromError turns a failure of the mesh into the client's error: the row
// of its code (chat.Code) and the columns that code shows. It is the one
// place where domain errors become HTTP errors; the text is the domain's,
// never rewritten here.
func FromError(err error) *Error {
	code := chat.Code(err)
	var d *chat.Error
	if !errors.As(err, &d) {
		d = &chat.Error{} // a context's error: nothing to show but its code
	}
	e := fromTable(code, "")
	for _, col := range columns {
		if slices.Contains(col.codes, code) {
			col.show(e, d)
		}
	}
	return e
}
