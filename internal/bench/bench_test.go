package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	xs := []float64{5, 1, 4, 2, 3} // unsorted on purpose
	for _, tc := range []struct {
		p, want float64
	}{
		{0, 1}, {50, 3}, {100, 5}, {25, 2}, {99, 4.96}, {10, 1.4},
	} {
		if got := Percentile(xs, tc.p); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Percentile(%v, %v) = %v, want %v", xs, tc.p, got, tc.want)
		}
	}
	if xs[0] != 5 {
		t.Errorf("Percentile sorted its input: %v", xs)
	}
	if got := Percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("Percentile(nil) = %v, want NaN", got)
	}
	if got := Percentile([]float64{7}, 99); got != 7 {
		t.Errorf("Percentile([7], 99) = %v", got)
	}
}

func TestReadSSE(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"openai", "data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\ndata: after\n\n", []string{`{"a":1}`, `{"a":2}`}},
		{"crlf and comments", ": ping\r\n\r\nevent: chunk\r\ndata: x\r\n\r\n", []string{"x"}},
		{"multi-line data", "data: a\ndata: b\n\n", []string{"a\nb"}},
		{"no space, no final blank line", "data:x\n\ndata: y", []string{"x", "y"}},
		{"id and retry ignored", "id: 1\nretry: 10\ndata: z\n\n", []string{"z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			err := ReadSSE(strings.NewReader(tc.in), func(d []byte) error {
				got = append(got, string(d))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
		})
	}
	stop := errors.New("stop")
	if err := ReadSSE(strings.NewReader("data: 1\n\ndata: 2\n\n"), func([]byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("callback error: got %v", err)
	}
}

func TestReadEventsDone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		done bool
	}{
		{"data: x\n\ndata: [DONE]\n\n", true},
		{"data: x\n\ndata: [DONE]", true},
		{"data: x\n\n", false},
		{"data: [DONE]x\n\n", false},
	} {
		done, err := ReadEvents(strings.NewReader(tc.in), func([]byte) error { return nil })
		if err != nil || done != tc.done {
			t.Errorf("ReadEvents(%q) = %v, %v; want done %v", tc.in, done, err, tc.done)
		}
	}
}

func TestWriteTable(t *testing.T) {
	t.Parallel()
	r := Row{
		Prompt: 128, Concurrency: 4, Requests: 8, Errors: 1, PromptTokens: 131, Completion: 128,
		TTFTp50: 85 * time.Millisecond, TTFTp99: 1500 * time.Microsecond,
		StreamTokS: 42.25, AggregateTokS: math.NaN(),
		LatencyP50: 3 * time.Second, LatencyP99: -1,
		RSS: 300 << 20, PeakRSS: 0, Load1: 1.5,
	}
	var b strings.Builder
	if err := WriteTable(&b, []Row{r}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want header, separator and one row:\n%s", b.String())
	}
	for _, l := range lines[1:] {
		if len(l) != len(lines[0]) {
			t.Errorf("columns do not line up:\n%s", b.String())
		}
	}
	cells := strings.Fields(strings.ReplaceAll(lines[2], "|", " "))
	want := []string{"128", "4", "8", "131", "128", "85", "1.50", "42.2", "-", "3000", "-", "1", "300", "-", "1.50"}
	if fmt.Sprint(cells) != fmt.Sprint(want) {
		t.Errorf("row cells\n got %q\nwant %q", cells, want)
	}

	b.Reset()
	a := Row{Prompt: 32, Concurrency: 1, AggregateTokS: 50, StreamTokS: 50, TTFTp50: 100 * time.Millisecond, LatencyP50: time.Second}
	bb := a
	bb.AggregateTokS, bb.TTFTp50 = 75, 50*time.Millisecond
	if err := WriteRatios(&b, []Ratio{{A: a, B: bb}}); err != nil {
		t.Fatal(err)
	}
	row := strings.Fields(strings.ReplaceAll(strings.Split(b.String(), "\n")[2], "|", " "))
	if row[4] != "1.50" || row[10] != "0.50" || row[7] != "1.00" {
		t.Errorf("ratios %q: want aggregate 1.50, stream 1.00, TTFT 0.50", row)
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	ok := func(first, last time.Duration, n int) Sample {
		return Sample{FirstToken: first, LastToken: last, Latency: last + time.Millisecond, CompletionTokens: n, PromptTokens: 10, UsageReported: true}
	}
	samples := []Sample{
		ok(100*time.Millisecond, 1100*time.Millisecond, 11), // 10 tok/s
		ok(200*time.Millisecond, 700*time.Millisecond, 11),  // 20 tok/s
		{Err: errors.New("boom")},
	}
	r := Summarize(32, 2, samples, 2*time.Second)
	if r.Requests != 3 || r.Errors != 1 {
		t.Errorf("requests %d errors %d", r.Requests, r.Errors)
	}
	if r.AggregateTokS != 11 { // 22 tokens / 2 s
		t.Errorf("aggregate %v, want 11", r.AggregateTokS)
	}
	if r.StreamTokS != 15 {
		t.Errorf("stream %v, want 15 (median of 10 and 20)", r.StreamTokS)
	}
	if r.TTFTp50 != 150*time.Millisecond {
		t.Errorf("TTFT p50 %v", r.TTFTp50)
	}
}

// TestReadMemory reads this process's memory, and status files written into
// a proc tree of the test's own: those of a process and of a kernel thread
// (no memory lines, which procfs reads as 0).
func TestReadMemory(t *testing.T) {
	t.Parallel()
	self, err := ReadMemory(os.Getpid())
	if err != nil || self.RSS <= 0 || self.Peak < self.RSS {
		t.Fatalf("ReadMemory(self) = %+v, %v", self, err)
	}

	root := t.TempDir()
	for pid, status := range map[string]string{
		"10": "Name:\tinference\nVmPeak:\t 999 kB\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n",
		"11": "Name:\tgateway\nVmHWM:\t  4096 kB\nVmRSS:\t  3072 kB\n",
		"2":  "Name:\tkthreadd\n",
	} {
		if err := os.Mkdir(filepath.Join(root, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, "status"), []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := procfs.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := readMemory(fs, 10, 11); err != nil || m.RSS != 4<<20 || m.Peak != 6<<20 {
		t.Fatalf("readMemory(10, 11) = %+v, %v; want the sums", m, err)
	}
	if _, err := readMemory(fs, 10, 2); !errors.Is(err, errNoMemory) {
		t.Fatalf("readMemory of a kernel thread: %v, want errNoMemory", err)
	}
	if _, err := readMemory(fs, 12); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}

// TestMachine reads the load average and the CPU model of this machine.
func TestMachine(t *testing.T) {
	t.Parallel()
	if l := LoadAverage(); math.IsNaN(l) || l < 0 {
		t.Errorf("LoadAverage = %v", l)
	}
	m := Machine()
	if strings.Contains(m, "load average unknown") || (runtime.GOARCH == "amd64" && strings.Contains(m, "unknown CPU")) {
		t.Errorf("Machine = %q", m)
	}
}

// TestStreamAgainstFakeServer checks timing and usage parsing end to end
// against a scripted server.
func TestStreamAgainstFakeServer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k" {
			http.Error(w, "no key", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for _, c := range []string{"Red", "dish", "."} {
			time.Sleep(20 * time.Millisecond)
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", c)
			f.Flush()
		}
		fmt.Fprint(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)

	c := &Client{BaseURL: srv.URL + "/v1", APIKey: "k", Timeout: 10 * time.Second}
	s := c.Stream(context.Background(), Request{Prompt: "What color is apple?", MaxTokens: 4, KeepText: true})
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	if s.Text != "Reddish." || s.PromptTokens != 9 || s.CompletionTokens != 4 || !s.UsageReported {
		t.Fatalf("sample %+v", s)
	}
	if s.FirstToken < 15*time.Millisecond || s.LastToken-s.FirstToken < 30*time.Millisecond || s.Latency < s.LastToken {
		t.Fatalf("timings first %v last %v latency %v", s.FirstToken, s.LastToken, s.Latency)
	}

	c.APIKey = ""
	if s := c.Stream(context.Background(), Request{Prompt: "x", MaxTokens: 1}); s.Err == nil || !strings.Contains(s.Err.Error(), "401") {
		t.Fatalf("want an HTTP 401 error, got %v", s.Err)
	}
}

func TestPrompt(t *testing.T) {
	t.Parallel()
	if n := len(strings.Fields(Prompt(300, 7))); n != 300 {
		t.Fatalf("Prompt(300) has %d words", n)
	}
	if Prompt(10, 0) == Prompt(10, 1) {
		t.Fatal("prompts with different offsets are the same")
	}
}
