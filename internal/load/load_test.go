package load

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeGateway answers chat completions in the OpenAI format with the text
// answer gives for the n-th request (0-based), one token per word, and
// serves /metrics with go_goroutines 7.
func fakeGateway(t *testing.T, answer func(n int, prompt string, maxTokens int) string) *httptest.Server {
	t.Helper()
	var count atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines 7\n")
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Messages  []struct{ Content string } `json:"messages"`
			MaxTokens int                        `json:"max_tokens"`
			Stream    bool                       `json:"stream"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) != 1 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		words := strings.Fields(answer(int(count.Add(1)-1), req.Messages[0].Content, req.MaxTokens))
		finish := "stop"
		if len(words) == req.MaxTokens {
			finish = "length"
		}
		usage := map[string]int{"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)}
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{
				"id": "chatcmpl-x", "object": "chat.completion",
				"choices": []any{map[string]any{"index": 0, "message": map[string]string{"role": "assistant", "content": strings.Join(words, " ")}, "finish_reason": finish}},
				"usage":   usage,
			})
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		event := func(v map[string]any) {
			v["id"], v["object"] = "chatcmpl-x", "chat.completion.chunk"
			b, _ := json.Marshal(v)
			fmt.Fprintf(w, "data: %s\n\n", b)
		}
		for i, word := range words {
			if i > 0 {
				word = " " + word
			}
			event(map[string]any{"choices": []any{map[string]any{"index": 0, "delta": map[string]string{"content": word}, "finish_reason": nil}}})
		}
		event(map[string]any{"choices": []any{map[string]any{"index": 0, "delta": map[string]string{}, "finish_reason": finish}}})
		event(map[string]any{"choices": []any{}, "usage": usage})
		fmt.Fprint(w, "data: [DONE]\n\n")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// echo answers with the prompt's first words, up to max_tokens.
func echo(_ int, prompt string, maxTokens int) string {
	words := strings.Fields(prompt)
	return strings.Join(words[:min(len(words), maxTokens)], " ")
}

// testConfig is a short run against srv that watches this test process.
func testConfig(srv *httptest.Server) Config {
	return Config{
		Client:    &Client{BaseURL: srv.URL, Timeout: 5 * time.Second},
		Clients:   4,
		Duration:  300 * time.Millisecond,
		Prompts:   Prompts(3),
		MaxTokens: []int{2, 20},
		Settle:    10 * time.Millisecond,
		Procs:     []Proc{{Name: "test", PID: os.Getpid(), MetricsAddr: strings.TrimPrefix(srv.URL, "http://")}},
		// The test process itself runs the clients and the server: its
		// descriptors and memory move with them.
		Limits: Limits{Goroutines: 10, FDs: 1000, RSSPercent: 100, RSSBytes: 1 << 30},
	}
}

func TestRunPasses(t *testing.T) {
	t.Parallel()
	srv := fakeGateway(t, echo)
	rep, err := Run(context.Background(), testConfig(srv))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Passed() || rep.Counts[OK] == 0 || rep.Counts[OK] != rep.Requests() {
		t.Fatalf("want a pass with every request OK: counts %v, failures %q", rep.Counts, rep.Failures)
	}
	if rep.CompletionTokens == 0 || rep.Latency.P50 <= 0 || rep.FirstToken.P99 <= 0 {
		t.Errorf("tokens %d, latency %+v, first token %+v", rep.CompletionTokens, rep.Latency, rep.FirstToken)
	}
	p := rep.Procs[0]
	if p.Before.Goroutines != 7 || p.After.Goroutines != 7 || p.Before.RSS <= 0 || p.Before.FDs <= 0 || p.After.Threads <= 0 || len(p.Before.Errors) > 0 {
		t.Errorf("process figures before %+v after %+v", p.Before, p.After)
	}
	var out strings.Builder
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| requests |", " latency | ", " test | ", "7 -> 7 (+0)", "verdict: PASS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

// TestRunWrongOutput has the gateway answer one prompt with another's text
// once the goldens are taken: the crosstalk the golden comparison is there
// to catch.
func TestRunWrongOutput(t *testing.T) {
	t.Parallel()
	var goldens atomic.Int64
	srv := fakeGateway(t, func(n int, prompt string, maxTokens int) string {
		if n >= int(goldens.Load()) && n%5 == 0 {
			prompt = "someone else's answer"
		}
		return echo(n, prompt, maxTokens)
	})
	cfg := testConfig(srv)
	goldens.Store(int64(len(cfg.Prompts) * len(cfg.MaxTokens)))
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed() || rep.Counts[WrongOutput] == 0 || !strings.Contains(strings.Join(rep.Failures, "\n"), "wrong output") {
		t.Fatalf("want a fail for wrong output: counts %v, failures %q", rep.Counts, rep.Failures)
	}
}

func TestRunGoldensFail(t *testing.T) {
	t.Parallel()
	srv := scripted(t, reply{503, "application/json", "1", `{"error":{"message":"no instance","type":"server_error"}}`})
	cfg := testConfig(srv)
	cfg.MaxTokens = []int{4}
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("want an error naming the 503 the golden got, got %v", err)
	}
}

// TestRunGoldensBackOff has the gateway refuse the first golden twice
// with a 429, as one whose per-key rate limit an earlier run used up does:
// the golden waits its Retry-After and is asked again.
func TestRunGoldensBackOff(t *testing.T) {
	t.Parallel()
	srv := fakeGateway(t, echo)
	var refused atomic.Int64
	limited := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/chat/completions" && refused.Add(1) <= 2 {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"message":"rate limit exceeded","type":"rate_limit_exceeded"}}`)
			return
		}
		srv.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(limited.Close)
	cfg := testConfig(limited)
	start := time.Now()
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Passed() || refused.Load() <= 2 {
		t.Fatalf("want a pass after two refused goldens: refused %d, counts %v, failures %q", refused.Load(), rep.Counts, rep.Failures)
	}
	if waited := time.Since(start); waited < 2*time.Second {
		t.Errorf("the goldens were asked again after %v: the two Retry-After: 1 were not honoured", waited)
	}
}

func TestRunRefusesRemoteGateways(t *testing.T) {
	t.Parallel()
	for url, ok := range map[string]bool{
		"http://127.0.0.1:3111":  true,
		"http://localhost:3111":  true,
		"http://[::1]:3111":      true,
		"http://127.9.9.9":       true,
		"http://10.0.0.5:3111":   false,
		"https://api.openai.com": false,
		"http://0.0.0.0:3111":    false,
	} {
		if err := checkLoopback(url); (err == nil) != ok {
			t.Errorf("checkLoopback(%s) = %v, want allowed %v", url, err, ok)
		}
	}
}

func TestJudge(t *testing.T) {
	t.Parallel()
	const mb = 1 << 20
	stats := func(rss int64, goroutines, fds int) Stats {
		return Stats{RSS: rss, Goroutines: goroutines, FDs: fds, Threads: 10}
	}
	gone := Stats{RSS: -1, Goroutines: -1, FDs: -1, Threads: -1, Errors: []string{"RSS: no such process"}}
	for _, tc := range []struct {
		name          string
		before, after Stats
		fail          string // in a failure; "" for a pass
	}{
		{"steady", stats(100*mb, 50, 20), stats(100*mb, 50, 20), ""},
		{"growth within the limits", stats(100*mb, 50, 20), stats(150*mb, 60, 30), ""},
		{"goroutines", stats(100*mb, 50, 20), stats(100*mb, 61, 20), "goroutines grew from 50 to 61"},
		{"descriptors", stats(100*mb, 50, 20), stats(100*mb, 50, 31), "descriptors grew from 20 to 31"},
		{"memory", stats(100*mb, 50, 20), stats(100*mb+20*mb+32*mb+1, 50, 20), "RSS bytes grew"},
		{"gone after the run", stats(100*mb, 50, 20), gone, "unreadable after the run"},
		{"never readable", gone, gone, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &Report{Procs: []ProcReport{{Proc: Proc{Name: "p"}, Before: tc.before, After: tc.after}}}
			r.Counts[OK] = 1
			r.judge(DefaultLimits())
			got := strings.Join(r.Failures, "\n")
			if (tc.fail == "") != r.Passed() || !strings.Contains(got, tc.fail) {
				t.Fatalf("failures %q, want one containing %q", r.Failures, tc.fail)
			}
		})
	}

	judge := func(counts map[Outcome]int) *Report {
		r := &Report{}
		for o, n := range counts {
			r.Counts[o] = n
		}
		r.judge(DefaultLimits())
		return r
	}
	if r := judge(map[Outcome]int{RateLimited: 5, Unavailable: 1}); r.Passed() {
		t.Error("a run without a single success passed")
	}
	if r := judge(map[Outcome]int{OK: 1, RateLimited: 5, Unavailable: 1}); !r.Passed() {
		t.Errorf("429s with Retry-After and 503s failed the run: %q", r.Failures)
	}
	for o := range Outcome(numOutcomes) {
		if r := judge(map[Outcome]int{OK: 1, o: 1}); r.Passed() == o.Failure() {
			t.Errorf("one %s: passed %v", o, r.Passed())
		}
	}
}
