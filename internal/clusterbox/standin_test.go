package clusterbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// TestLoadBalancerFullDuplex: a gateway may start its streamed answer
// before the proxy has passed on all of the request body. The stand-in
// must carry on forwarding the body and the answer both; net/http's
// default for HTTP/1 (close the request body once the response begins)
// cuts the answer (golang/go#40747), as the box's drills saw.
func TestLoadBalancerFullDuplex(t *testing.T) {
	const half = 64 << 10
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			t.Error(err)
			return
		}
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "head ")
		_ = rc.Flush()
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("backend: reading the body: %v", err)
			return
		}
		_, _ = fmt.Fprintf(w, "read %d", len(b))
	}))
	defer backend.Close()
	u, err := url.Parse(backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	lb := &LoadBalancer{}
	lb.backends.Store(&[]*url.URL{u})
	var errLog bytes.Buffer
	front := httptest.NewServer(lb.handler(log.New(&errLog, "", 0)))
	defer front.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, front.URL, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 2 * half
	go func() {
		_, _ = pw.Write(bytes.Repeat([]byte("a"), half))
		time.Sleep(200 * time.Millisecond) // the answer has begun by now
		// In pieces, so that the proxy reads it in pieces.
		for range half / 1024 {
			_, _ = pw.Write(bytes.Repeat([]byte("b"), 1024))
			time.Sleep(time.Millisecond)
		}
		_ = pw.Close()
	}()
	want := fmt.Sprintf("head read %d", 2*half)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || string(got) != want {
		t.Fatalf("answer %q (%v), want %q; proxy log: %s", got, err, want, errLog.String())
	}
}
