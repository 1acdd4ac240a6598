package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/slm-mesh/slm-mesh/internal/openai"
)

// decodeBody reads the request body (readBody) and decodes it with
// decode, answering the client itself when either fails; ok reports
// whether the request goes on.
func decodeBody[T any](s *Server, c *gin.Context, decode func([]byte, openai.Limits) (T, *openai.Error)) (req T, ok bool) {
	body, apiErr := s.readBody(c)
	if apiErr == nil {
		req, apiErr = decode(body, s.cfg.Limits)
	}
	if apiErr != nil {
		s.fail(c, apiErr)
		return req, false
	}
	return req, true
}

// begin bounds a decoded request by the request timeout and counts it in
// flight until done is called.
func (s *Server) begin(c *gin.Context) (ctx context.Context, done func()) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.RequestTimeout)
	s.m.inFlight.Inc()
	return ctx, func() {
		s.m.inFlight.Dec()
		cancel()
	}
}

// readBody reads the request body, refusing one over the body limit and
// one that does not arrive in time (see Config.BodyTimeout).
//
// A Content-Length over the limit gets its 413 before anything is read:
// net/http sends "100 Continue" to a client that asked with "Expect:
// 100-continue" (curl does for bodies over 1 KiB) only on the body's first
// read, so such a client is told at once and sends nothing. net/http then
// closes the connection, since the unread body is still on its way.
func (s *Server) readBody(c *gin.Context) ([]byte, *openai.Error) {
	limit := s.cfg.Limits.MaxBodyBytes
	if c.Request.ContentLength > limit {
		return nil, openai.BodyTooLarge(limit)
	}
	body := &deadlineReader{
		r:       http.MaxBytesReader(c.Writer, c.Request.Body, limit),
		rc:      http.NewResponseController(c.Writer),
		timeout: s.cfg.BodyTimeout,
	}
	if s.cfg.ReadTimeout > 0 {
		body.end = time.Now().Add(s.cfg.ReadTimeout)
	}
	data, err := io.ReadAll(body)
	var tooLarge *http.MaxBytesError
	var netErr net.Error
	switch {
	case err == nil:
		return data, nil
	case errors.As(err, &tooLarge):
		return nil, openai.BodyTooLarge(limit)
	case errors.As(err, &netErr) && netErr.Timeout():
		s.reqLog(c).Info("request body did not arrive in time", "remote", c.ClientIP(), "read", len(data))
		return nil, openai.RequestTimeout("The request body did not arrive in time.")
	default:
		return nil, openai.InvalidRequest("", "could not read the request body")
	}
}

// deadlineReader gives each read of a request body timeout to bring bytes,
// and all of them together until end (when not zero): a client that
// declares a body and stops sending is cut off after timeout rather than
// holding its connection until the server's whole-request read timeout.
//
// The deadlines replace the http.Server's own ReadTimeout deadline on the
// connection, hence end. net/http clears the read deadline itself once the
// body has been read to its end, so a long generation afterwards is not
// cut short.
type deadlineReader struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration // zero: no deadline of its own
	end     time.Time
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if d.timeout > 0 {
		t := time.Now().Add(d.timeout)
		if !d.end.IsZero() && d.end.Before(t) {
			t = d.end
		}
		// An error means the connection cannot take deadlines (HTTP/2
		// has its own); the server's timeouts still apply.
		_ = d.rc.SetReadDeadline(t)
	}
	return d.r.Read(p)
}
