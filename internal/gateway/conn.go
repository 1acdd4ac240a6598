package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/slm-mesh/slm-mesh/internal/openai"
)

// WrapListener wraps ln so that the errors net/http answers by itself,
// before any handler runs, reach the client as the API's JSON error
// envelope like every other error: 431 for headers over the limit, 400
// for a request that is not valid HTTP (a bad header value, a bad %-escape
// in the path, headers cut short by the header timeout), 501 for an
// unknown Transfer-Encoding, 505 for an unknown HTTP version, and 417 for
// an Expect other than 100-continue. The http.Server that serves the
// gateway must accept its connections through it.
//
// net/http offers no hook for these: it writes them straight to the
// connection, in one Write each, in a fixed form no handler response has
// (status line, then exactly "Content-Type: text/plain; charset=utf-8" and
// "Connection: close", no Date). The connection recognises that form and
// writes the envelope instead. Whatever net/http does not answer at all (a
// client that sends nothing, or stops within a header line, until the
// header timeout) gets no response, as before.
//
// The standard library does not promise that form. TestHTTPLayerErrors
// guards it: it makes the real net/http send each of these errors, so a Go
// release that changes the form fails it rather than letting text/plain
// reach clients.
func (s *Server) WrapListener(ln net.Listener) net.Listener { return envelopeListener{ln} }

type envelopeListener struct{ net.Listener }

func (l envelopeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &envelopeConn{Conn: c}, nil
}

// envelopeConn rewrites net/http's own error responses; see WrapListener.
type envelopeConn struct{ net.Conn }

// CloseWrite lets net/http half-close the connection after an error, as it
// does on a bare TCP connection, so that the client reads the response
// before the connection goes.
func (c *envelopeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *envelopeConn) Write(b []byte) (int, error) {
	resp, ok := rewriteHTTPError(b)
	if !ok {
		return c.Conn.Write(b)
	}
	if _, err := c.Conn.Write(resp); err != nil {
		return 0, err
	}
	return len(b), nil
}

// netHTTPErrorHeaders are the headers net/http sends with its own errors.
var netHTTPErrorHeaders = []byte("\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")

// rewriteHTTPError returns the envelope response for b when b is one of
// net/http's own error responses.
func rewriteHTTPError(b []byte) ([]byte, bool) {
	const proto = "HTTP/1.1 "
	if len(b) < len(proto)+3 || !bytes.HasPrefix(b, []byte(proto)) {
		return nil, false
	}
	status, err := strconv.Atoi(string(b[len(proto) : len(proto)+3]))
	if err != nil {
		return nil, false
	}
	line, rest, _ := bytes.Cut(b, []byte("\r\n"))
	var e *openai.Error
	switch {
	case status == http.StatusExpectationFailed:
		// Sent through the ResponseWriter, with headers of its own and no
		// body; the gateway never sends a 417 otherwise.
		e = openai.InvalidRequest("", `The Expect header is not supported except for "100-continue".`)
	case bytes.HasPrefix(rest, netHTTPErrorHeaders[len("\r\n"):]):
		e = httpLayerError(status, line)
	default:
		return nil, false
	}
	e.Status = status
	body, err := json.Marshal(e)
	if err != nil {
		return nil, false
	}
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body), true
}

// httpLayerError words one of net/http's errors; line is its status line,
// e.g. "HTTP/1.1 400 Bad Request: invalid header value".
func httpLayerError(status int, line []byte) *openai.Error {
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		e := openai.InvalidRequest("", "The request's headers are too large.")
		e.Code = "request_headers_too_large"
		return e
	case http.StatusNotImplemented:
		return openai.InvalidRequest("", "The request's Transfer-Encoding is not supported.")
	}
	// The detail net/http gives after the status text, if any ("invalid
	// header value", "malformed Host header").
	_, detail, _ := bytes.Cut(line, []byte(": "))
	msg := "The request is not valid HTTP"
	if len(detail) > 0 {
		msg += ": " + string(detail)
	}
	return openai.InvalidRequest("", msg+".")
}
