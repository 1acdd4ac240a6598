package cli

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
)

// HTTPServer is a service's one port: RPC, /health and /metrics.
type HTTPServer struct {
	srv  *http.Server
	ln   net.Listener
	errc chan error
	log  hclog.Logger
}

// StartHTTP listens on addr and serves h in the background. Headers must
// arrive within 10 s and idle keep-alive connections close after 2 minutes;
// opts may set more on the server (the gateway bounds body reads).
func StartHTTP(addr string, h http.Handler, log hclog.Logger, opts ...func(*http.Server)) (*HTTPServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	for _, o := range opts {
		o(srv)
	}
	s := &HTTPServer{
		srv:  srv,
		ln:   ln,
		errc: make(chan error, 1),
		log:  log,
	}
	go func() { s.errc <- s.srv.Serve(ln) }()
	log.Info("listening", "addr", s.Addr())
	return s, nil
}

// Addr is the address the server listens on (with the real port when addr
// asked for port 0).
func (s *HTTPServer) Addr() string { return s.ln.Addr().String() }

// Run waits until ctx ends (a signal) or serving fails. Then it drains:
// drain (the service's own shutdown: stop taking calls, let running ones
// finish) and the HTTP server's shutdown share the timeout. A clean stop
// returns nil, so the process exits 0.
func (s *HTTPServer) Run(ctx context.Context, timeout time.Duration, drain func(context.Context) error) error {
	select {
	case <-ctx.Done():
	case err := <-s.errc:
		return err
	}
	s.log.Info("shutting down", "drain_timeout", timeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if drain != nil {
		if err := drain(sctx); err != nil {
			s.log.Warn("drain incomplete", "error", err)
		}
	}
	if err := s.srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	s.log.Info("stopped")
	return nil
}
