package load

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
)

// TestGoroutines reads go_goroutines from /metrics pages as the Go
// collector writes them, and refuses pages without it or that are not
// Prometheus text.
func TestGoroutines(t *testing.T) {
	t.Parallel()
	const page = "# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines 42\n"
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   int
		err    string // in the error; "" for none
	}{
		{"alone", 200, page, 42, ""},
		{"among others", 200, "# TYPE go_threads gauge\ngo_threads 9\n" + page +
			"# TYPE slm_http_requests_total counter\nslm_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 3\n", 42, ""},
		{"a prefix is another metric", 200, "# TYPE go_goroutines_max gauge\ngo_goroutines_max 5\n", -1, errNoGoroutines.Error()},
		{"no Go collector", 200, "# TYPE slm_requests_running gauge\nslm_requests_running 0\n", -1, errNoGoroutines.Error()},
		{"not Prometheus text", 200, "<html>go_goroutines 42</html>\n", -1, "/metrics: "},
		{"server error", 500, page, -1, "500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/metrics" {
					http.NotFound(w, r)
					return
				}
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			n, err := goroutines(context.Background(), srv.Client(), strings.TrimPrefix(srv.URL, "http://"))
			if n != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("goroutines = %d, %v; want %d and an error containing %q", n, err, tc.want, tc.err)
			}
		})
	}
}

// TestReadStatsGone reads a process that has exited: every figure is -1
// and Errors says why, so that the judge reports it unreadable rather than
// a process that shrank to nothing.
func TestReadStatsGone(t *testing.T) {
	t.Parallel()
	// Run waits for the process, so it is reaped: its /proc entry is gone.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	s := ReadStats(context.Background(), http.DefaultClient, Proc{Name: "gone", PID: cmd.Process.Pid})
	if s.RSS != -1 || s.FDs != -1 || s.Threads != -1 || s.Goroutines != -1 {
		t.Errorf("figures of an exited process: %+v", s)
	}
	if len(s.Errors) < 2 {
		t.Errorf("errors %q, want one for the memory and one for the process", s.Errors)
	}
}
