package openai

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Error types as the OpenAI API names them in error.type.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
)

// DefaultRetryAfter is the Retry-After, in seconds, that FromCode suggests for
// an overloaded service; the queue drains within a token or two, so a short
// wait is enough.
const DefaultRetryAfter = 1

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
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: param, Message: message}
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
	return &Error{
		Status:  http.StatusNotFound,
		Type:    TypeInvalidRequest,
		Code:    "model_not_found",
		Message: fmt.Sprintf("The model `%s` does not exist.", model),
	}
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
	if message == "" {
		message = "The server is overloaded; please retry shortly."
	}
	return &Error{
		Status:     http.StatusTooManyRequests,
		Type:       TypeRateLimit,
		Code:       "rate_limit_exceeded",
		Message:    message,
		RetryAfter: retryAfter,
	}
}

// Unavailable is a 503 for a backend that cannot be reached or has no model
// loaded.
func Unavailable(message string) *Error {
	if message == "" {
		message = "The service is temporarily unavailable; please retry shortly."
	}
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeServer, Code: "service_unavailable", Message: message}
}

// Timeout is a 504 for a generation that ran out of time.
func Timeout(message string) *Error {
	if message == "" {
		message = "The request timed out."
	}
	return &Error{Status: http.StatusGatewayTimeout, Type: TypeServer, Code: "timeout", Message: message}
}

// Internal is a 500. It takes no message on purpose: the cause belongs in the
// gateway's log, not in the client's response.
func Internal() *Error {
	return &Error{
		Status:  http.StatusInternalServerError,
		Type:    TypeServer,
		Message: "The server had an error while processing your request.",
	}
}

// Upstream is a failure as a service reported it: the fields of the rpc
// package's Error, copied so that this package does not depend on rpc.
type Upstream struct {
	// Code is one of the rpc package's codes ("invalid_argument", …).
	Code string
	// Message describes the failure; see FromCode for when it is shown.
	Message string
	// Param names the request field at fault ("messages", "max_tokens").
	Param string
	// Reason refines Code for machines, e.g. "context_length_exceeded".
	Reason string
	// RetryAfter is how long the service suggests waiting; zero: no
	// suggestion.
	RetryAfter time.Duration
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

// FromCode turns a service's error into the client's error. It is the one
// place where service errors become HTTP errors.
//
// Messages of the codes that describe the client's request
// (invalid_argument, not_found, overloaded) are passed on, with Param as
// error.param and, for invalid_argument, Reason as error.code; the other
// codes may carry internal detail such as addresses and get a fixed text.
// A 429 or 503 carries u.RetryAfter (see RetryAfterSeconds), else
// DefaultRetryAfter. An unknown code is internal.
func FromCode(u Upstream) *Error {
	e := fromCode(u.Code, u.Message)
	switch u.Code {
	case "invalid_argument":
		e.Param, e.Code = u.Param, u.Reason
	case "not_found":
		e.Param = u.Param
	}
	if e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable {
		e.RetryAfter = RetryAfterSeconds(u.RetryAfter)
		if e.RetryAfter == 0 {
			e.RetryAfter = DefaultRetryAfter
		}
	}
	return e
}

func fromCode(code, msg string) *Error {
	switch code {
	case "invalid_argument":
		if msg == "" {
			msg = "The request is invalid."
		}
		return InvalidRequest("", msg)
	case "not_found":
		// The only thing the services look up by name for a client is the
		// model, hence model_not_found.
		e := ModelNotFound("")
		if msg != "" {
			e.Message = msg
		} else {
			e.Message = "The model does not exist."
		}
		return e
	case "overloaded":
		return Overloaded(msg, DefaultRetryAfter)
	case "unavailable":
		return Unavailable("")
	case "deadline_exceeded":
		return Timeout("")
	case "canceled":
		// A client that went away never reads this. A client still waiting
		// saw its request cancelled by us, e.g. during a shutdown, and
		// should retry elsewhere: hence 503 rather than a 4xx.
		e := Unavailable("The request was cancelled by the server; please retry.")
		e.Code = "request_canceled"
		return e
	default:
		return Internal()
	}
}
