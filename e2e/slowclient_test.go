package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
)

// The gateway's timeouts in TestSlowClients: short, so that the test is
// quick, and far apart from the clients' pace, so that it is not flaky.
const (
	slowHeaderTimeout = time.Second
	slowReadTimeout   = 2 * time.Second
	slowWriteTimeout  = time.Second
	slowIdleTimeout   = 2 * time.Second
	// tricklePause is how long a slow client waits between two bytes.
	tricklePause = 100 * time.Millisecond
)

// TestSlowClients runs a mesh whose gateway has short timeouts against
// clients that would hold a connection for ever without them: one that
// sends its headers a byte at a time (slowloris), one that sends its body a
// byte at a time, one that keeps an idle connection open, and one that asks
// for a long stream and never reads it.
func TestSlowClients(t *testing.T) {
	t.Parallel()
	m := startMesh(t, localmesh.Config{
		// One slot, and a context long enough for a stream larger than the
		// socket buffers between the gateway and a client.
		Parallel: 1, Ctx: 2048,
		ExtraArgs: map[string][]string{"gateway": {
			"-read-header-timeout", slowHeaderTimeout.String(), "-read-timeout", slowReadTimeout.String(),
			"-write-timeout", slowWriteTimeout.String(), "-idle-timeout", slowIdleTimeout.String(),
		}},
	})

	// Each trickle would take minutes to finish; the gateway must close the
	// connection once its timeout has passed, and not before.
	tests := []struct {
		name    string
		request string // sent at once; then one byte every tricklePause
		timeout time.Duration
	}{
		{"SlowHeaders", "GET /health HTTP/1.1\r\nHost: gateway\r\nX-Slow: ", slowHeaderTimeout},
		{"SlowBody", "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{", slowReadTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dialGateway(t, m, nil)
			start := time.Now()
			go trickle(conn, tt.request)
			got, err := readUntilClosed(conn, conn, 10*time.Second)
			elapsed := time.Since(start)
			if err != nil {
				t.Fatalf("%v after %s; read %q", err, elapsed.Round(time.Millisecond), got)
			}
			if elapsed < tt.timeout*9/10 || elapsed > tt.timeout+3*time.Second {
				t.Errorf("the gateway closed the connection after %s, want about %s", elapsed.Round(time.Millisecond), tt.timeout)
			}
			// Nothing, a 400 for headers cut short, or a 408 for the body
			// that did not arrive in time.
			if len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) && !bytes.HasPrefix(got, []byte("HTTP/1.1 408 ")) {
				t.Errorf("the gateway answered a trickled request with %q", got)
			}
		})
	}

	t.Run("IdleConnection", func(t *testing.T) {
		conn := dialGateway(t, m, nil)
		if _, err := io.WriteString(conn, "GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("/health: %d, close %v, %v", resp.StatusCode, resp.Close, err)
		}
		start := time.Now()
		got, err := readUntilClosed(conn, br, 10*time.Second)
		elapsed := time.Since(start)
		if err != nil || len(got) > 0 {
			t.Fatalf("%v after %s; read %q", err, elapsed.Round(time.Millisecond), got)
		}
		if elapsed < slowIdleTimeout*9/10 || elapsed > slowIdleTimeout+3*time.Second {
			t.Errorf("the gateway closed the idle connection after %s, want about %s", elapsed.Round(time.Millisecond), slowIdleTimeout)
		}
	})

	t.Run("LongResponses", func(t *testing.T) { testLongResponses(t, m) })
	t.Run("StalledStream", func(t *testing.T) { testStalledStream(t, m) })
}

// longTokens is a generation of several seconds, several times the
// gateway's write timeout, and a stream of some 350 KiB.
const longTokens = 1900

// longStream asks for longTokens tokens as a stream.
var longStream = `{"messages":[{"role":"user","content":"` + story + `"}],"max_tokens":` + strconv.Itoa(longTokens) + `,"temperature":0,"stream":true}`

// testLongResponses proves that the write timeout bounds each write, not
// the response: a completion generated for longer than it, and a stream
// read by its client for longer than it, arrive whole.
func testLongResponses(t *testing.T, m *mesh) {
	start := time.Now()
	if res := m.complete(t, m.greedy(story, longTokens)); res.Usage.CompletionTokens != longTokens {
		t.Errorf("a long completion: %d tokens, want %d", res.Usage.CompletionTokens, longTokens)
	}
	if took := time.Since(start); took < 2*slowWriteTimeout {
		t.Logf("the completion took only %s, less than twice the write timeout: it proves less than it should", took)
	}
	resp, b := m.request(t, http.MethodPost, "/v1/chat/completions", longStream, nil)
	if events := bytes.Count(b, []byte("\ndata: ")); resp.StatusCode != http.StatusOK || !bytes.HasSuffix(b, []byte("data: [DONE]\n\n")) || events < longTokens/2 {
		t.Errorf("a long stream: %d, %d events, ends %q", resp.StatusCode, events, b[max(0, len(b)-100):])
	}
}

// testStalledStream asks for a long stream and never reads it, on a socket
// that buffers little (see smallWindow): about 120 KiB fit between the
// gateway and the client, while the stream is some 350 KiB. Once the
// buffers are full, the gateway's next write blocks; after -write-timeout it
// fails, which ends the request and cancels its generation. Without the
// write deadline the write would block for as long as the client keeps the
// connection open, and so would the gateway's handler. The test holds the
// connection open and asserts, within a bound, that the gateway's handler
// has finished, that the inference slot is free, that the generation was
// cancelled rather than finished, and that the gateway logged the write
// timeout.
func testStalledStream(t *testing.T, m *mesh) {
	gw, inf := m.Addr("gateway"), m.Addr("inference-1")
	before := scrape(t, inf)
	conn := dialGateway(t, m, smallWindow)
	if _, err := io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"+
		"Content-Length: "+strconv.Itoa(len(longStream))+"\r\n\r\n"+longStream); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var running, busy float64
	if !eventually(30*time.Second, 50*time.Millisecond, func() bool {
		running = scrape(t, gw).sum("slm_requests_running")
		now := scrape(t, inf)
		busy = now.sum("slm_inference_requests_running")
		ended := now.sum("slm_inference_requests_total") > before.sum("slm_inference_requests_total")
		return running == 0 && busy == 0 && ended
	}) {
		t.Fatalf("30s after a stream that nobody reads began, the gateway runs %v requests and the inference %v", running, busy)
	}
	t.Logf("the gateway gave up on the stalled client after %s", time.Since(start).Round(time.Millisecond))

	after := scrape(t, inf)
	if ok := after.sum("slm_inference_requests_total", `code="ok"`) - before.sum("slm_inference_requests_total", `code="ok"`); ok != 0 {
		t.Errorf("the generation finished (%v more ok): the buffers never filled, so the test proved nothing", ok)
	}
	if n := after.sum("slm_inference_generation_tokens_total") - before.sum("slm_inference_generation_tokens_total"); n >= longTokens {
		t.Errorf("%v tokens were generated for a client that read none, want fewer than %d", n, longTokens)
	}
	log, err := os.ReadFile(filepath.Join(m.Dir(), "gateway.log"))
	if err != nil {
		t.Fatal(err)
	}
	timedOut := false
	for _, line := range bytes.Split(log, []byte("\n")) {
		if bytes.Contains(line, []byte("client did not take the response")) && bytes.Contains(line, []byte("i/o timeout")) {
			timedOut = true
		}
	}
	if !timedOut {
		t.Errorf("the gateway did not log a write timeout:\n%s", log)
	}
}

// dialGateway opens a raw TCP connection to m's gateway, with control (if
// not nil) applied to the socket before it connects, closed when t ends.
func dialGateway(t *testing.T, m *mesh, control func(network, address string, c syscall.RawConn) error) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: control}
	conn, err := d.Dial("tcp", m.Addr("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// smallWindow gives a client socket a small receive buffer and a small
// segment size. The segment size matters more: Linux sizes the server's
// send buffer from it, and on loopback, whose segments are 64 KiB, that
// buffer would hold megabytes.
func smallWindow(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		if err == nil {
			err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 536)
		}
	}); cerr != nil {
		return cerr
	}
	return err
}

// trickle writes request, then one more byte every tricklePause, until a
// write fails (the server closed the connection).
func trickle(conn net.Conn, request string) {
	if _, err := io.WriteString(conn, request); err != nil {
		return
	}
	for {
		time.Sleep(tricklePause)
		if _, err := conn.Write([]byte("a")); err != nil {
			return
		}
	}
}

// readUntilClosed reads r, which reads conn, until the peer closes the
// connection, and returns what it read. A reset counts as closed; a
// connection still open after timeout is an error.
func readUntilClosed(conn net.Conn, r io.Reader, timeout time.Duration) ([]byte, error) {
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	got, err := io.ReadAll(r)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return got, fmt.Errorf("the connection is still open after %s", timeout)
	case err != nil && !errors.Is(err, syscall.ECONNRESET):
		return got, err
	}
	return got, nil
}
