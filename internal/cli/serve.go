package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
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

// Timeouts bound how long a client may take over each part of an exchange
// with a service's port, so that a slow or stalled client — one that
// trickles its request (slowloris) or stops reading the response — cannot
// hold a connection and its goroutine for ever. Zero means no bound, except
// that a zero ReadHeader or Idle takes Read's (as in http.Server).
type Timeouts struct {
	// ReadHeader bounds reading a request's headers.
	ReadHeader time.Duration
	// Read bounds reading a whole request, headers and body.
	Read time.Duration
	// Write bounds writing a response. A handler whose response may take
	// longer — the gateway's chat completions, streamed or generated first —
	// moves the deadline before each write, so that it bounds every write
	// instead: a client that stops reading is cut off after Write, one that
	// reads slowly is not.
	Write time.Duration
	// Idle closes a keep-alive connection with no next request for this long.
	Idle time.Duration
}

// PrivateTimeouts suit caller and inference, whose requests carry no body
// (the RPC upgrade, /health, /metrics) and whose responses are short. An
// RPC WebSocket is not bound by them: the connection leaves the http.Server
// at the upgrade, and the rpc package puts a deadline on each of its reads
// and writes (keepalive).
var PrivateTimeouts = Timeouts{ReadHeader: 10 * time.Second, Read: 10 * time.Second, Write: 30 * time.Second, Idle: 2 * time.Minute}

// Timeouts registers -read-header-timeout, -read-timeout, -write-timeout and
// -idle-timeout (env SLM_READ_HEADER_TIMEOUT, SLM_READ_TIMEOUT, ...) with
// the defaults in def. The values are set by Parse.
func (f *Flags) Timeouts(def Timeouts) *Timeouts {
	t := new(Timeouts)
	f.durationVar(&t.ReadHeader, "read-header-timeout", "SLM_READ_HEADER_TIMEOUT", def.ReadHeader, "longest a client may take to send a request's headers")
	f.durationVar(&t.Read, "read-timeout", "SLM_READ_TIMEOUT", def.Read, "longest a client may take to send a whole request, body included")
	f.durationVar(&t.Write, "write-timeout", "SLM_WRITE_TIMEOUT", def.Write, "longest writing a response may take (the gateway: each write of a stream); a client that stops reading is cut off after it")
	f.durationVar(&t.Idle, "idle-timeout", "SLM_IDLE_TIMEOUT", def.Idle, "how long an idle keep-alive connection stays open")
	return t
}

// ListenerWrapper is implemented by a handler that must see its
// connections below HTTP (the gateway, to put net/http's own error
// responses into its API's format).
type ListenerWrapper interface {
	WrapListener(net.Listener) net.Listener
}

// ServerTLS registers -tls-cert and -tls-key (SLM_TLS_CERT, SLM_TLS_KEY):
// the PEM certificate and key a private service serves its port with
// (RPC, /health, /metrics) when its peers are on other hosts.
func (f *Flags) ServerTLS() *ServerTLS {
	t := new(ServerTLS)
	t.cert = f.String("tls-cert", "SLM_TLS_CERT", "", "PEM certificate to serve RPC, /health and /metrics over TLS with (empty: plain HTTP)")
	t.key = f.String("tls-key", "SLM_TLS_KEY", "", "PEM key of -tls-cert")
	return t
}

// ServerTLS is a service's certificate flags.
type ServerTLS struct{ cert, key *string }

// Config loads the certificate: nil when neither flag is set, an error
// when only one is or the files do not load.
func (t *ServerTLS) Config() (*tls.Config, error) {
	switch {
	case *t.cert == "" && *t.key == "":
		return nil, nil
	case *t.cert == "" || *t.key == "":
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(*t.cert, *t.key)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// StartHTTP listens on addr and serves h in the background, with the
// timeouts t, over TLS with tlsCfg unless it is nil. When h is a
// ListenerWrapper, it accepts the connections through h.WrapListener.
func StartHTTP(addr string, h http.Handler, t Timeouts, tlsCfg *tls.Config, log hclog.Logger) (*HTTPServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	if w, ok := h.(ListenerWrapper); ok {
		ln = w.WrapListener(ln)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
	}
	s := &HTTPServer{
		srv:  srv,
		ln:   ln,
		errc: make(chan error, 1),
		log:  log,
	}
	go func() { s.errc <- s.srv.Serve(ln) }()
	log.Info("listening", "addr", s.Addr(), "tls", tlsCfg != nil)
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
