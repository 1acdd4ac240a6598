package load

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/bench"
)

// Limits are how much a process may have grown once the run has settled,
// compared with before it, without failing the run.
type Limits struct {
	Goroutines int
	FDs        int
	// RSS may grow by RSSPercent of its first reading plus RSSBytes.
	RSSPercent float64
	RSSBytes   int64
}

// DefaultLimits are tools/load's default tolerances. A leak of a goroutine
// or a descriptor per request shows as hundreds after a minute of load,
// while a few come and go with background work (health checks, discovery
// refreshes, RPC reconnects): hence 10. The Go heap and the C allocator keep
// memory reached at the peak for minutes after it is freed, so RSS after a
// load is legitimately above RSS before; 20% + 32 MiB lets that through and
// still catches a leak of tens of kB per request over thousands of requests.
func DefaultLimits() Limits {
	return Limits{Goroutines: 10, FDs: 10, RSSPercent: 20, RSSBytes: 32 << 20}
}

// Percentiles of a duration; -1 when there was no sample.
type Percentiles struct {
	P50, P95, P99 time.Duration
}

func percentiles(ds []float64) Percentiles {
	at := func(p float64) time.Duration {
		v := bench.Percentile(ds, p)
		if math.IsNaN(v) {
			return -1
		}
		return time.Duration(v)
	}
	return Percentiles{P50: at(50), P95: at(95), P99: at(99)}
}

// ProcReport is one process's figures before and after the run.
type ProcReport struct {
	Proc
	Before, After Stats
}

// Report is what a run saw, and its verdict.
type Report struct {
	// Clients, Duration and Workload describe the run as configured.
	Clients  int
	Duration time.Duration
	Workload string
	// Wall runs from the first request to the last response.
	Wall time.Duration
	// Counts holds the number of requests by outcome; Examples the Detail
	// of the first of each.
	Counts   [numOutcomes]int
	Examples [numOutcomes]string
	// Latency is over OK responses, FirstToken over OK streams.
	Latency, FirstToken Percentiles
	// CompletionTokens is the sum over OK responses.
	CompletionTokens int
	Procs            []ProcReport
	// Interrupted is set when the run was stopped early through its context.
	Interrupted bool
	// Failures are the reasons the run fails; none: it passes.
	Failures []string
	// Notes say what could not be checked.
	Notes []string
}

func newReport(cfg Config, results []Result, wall time.Duration) *Report {
	r := &Report{
		Clients:  cfg.Clients,
		Duration: cfg.Duration,
		Workload: fmt.Sprintf("%d prompts × max_tokens %v, greedy, about half streamed", len(cfg.Prompts), cfg.MaxTokens),
		Wall:     wall,
	}
	var lat, ttft []float64
	for _, res := range results {
		if r.Counts[res.Outcome] == 0 {
			r.Examples[res.Outcome] = res.Detail
		}
		r.Counts[res.Outcome]++
		if res.Outcome != OK {
			continue
		}
		r.CompletionTokens += res.CompletionTokens
		lat = append(lat, float64(res.Latency))
		if res.FirstToken > 0 {
			ttft = append(ttft, float64(res.FirstToken))
		}
	}
	r.Latency, r.FirstToken = percentiles(lat), percentiles(ttft)
	return r
}

// Requests is the number of requests checked.
func (r *Report) Requests() int {
	n := 0
	for _, c := range r.Counts {
		n += c
	}
	return n
}

// TokensPerSecond is the completion tokens of OK responses over the wall
// time: the mesh's aggregate generation speed under this load.
func (r *Report) TokensPerSecond() float64 {
	if r.Wall <= 0 {
		return math.NaN()
	}
	return float64(r.CompletionTokens) / r.Wall.Seconds()
}

// Passed reports the verdict.
func (r *Report) Passed() bool { return len(r.Failures) == 0 }

// judge fills Failures and Notes.
func (r *Report) judge(l Limits) {
	failf := func(format string, args ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, args...)) }
	if r.Interrupted {
		failf("interrupted before the end")
	}
	for o := range Outcome(numOutcomes) {
		if o.Failure() && r.Counts[o] > 0 {
			failf("%d %s (the first: %s)", r.Counts[o], o, r.Examples[o])
		}
	}
	if r.Counts[OK] == 0 {
		failf("no request succeeded")
	}
	for _, p := range r.Procs {
		for _, e := range p.Before.Errors {
			r.Notes = append(r.Notes, fmt.Sprintf("%s: not checked: %s", p.Name, e))
		}
		grow := func(what string, before, after, limit int64) {
			switch {
			case before < 0:
			case after < 0:
				failf("%s: %s unreadable after the run (%s)", p.Name, what, strings.Join(p.After.Errors, "; "))
			case after-before > limit:
				failf("%s: %s grew from %d to %d (limit +%d)", p.Name, what, before, after, limit)
			}
		}
		grow("goroutines", int64(p.Before.Goroutines), int64(p.After.Goroutines), int64(l.Goroutines))
		grow("descriptors", int64(p.Before.FDs), int64(p.After.FDs), int64(l.FDs))
		grow("RSS bytes", p.Before.RSS, p.After.RSS, int64(float64(p.Before.RSS)*l.RSSPercent/100)+l.RSSBytes)
	}
}

// Write prints the report: requests by outcome, latencies, throughput, the
// processes before → after, and the verdict. The tables are Markdown, to
// paste into docs/RELIABILITY.md as they are.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%d clients for %v (wall %v); workload: %s\n\n", r.Clients, r.Duration, r.Wall.Round(time.Millisecond), r.Workload)

	header := []string{"requests"}
	row := []string{strconv.Itoa(r.Requests())}
	for o := range Outcome(numOutcomes) {
		header, row = append(header, o.String()), append(row, strconv.Itoa(r.Counts[o]))
	}
	if err := bench.WriteMarkdown(&b, header, [][]string{row}); err != nil {
		return err
	}

	b.WriteString("\n")
	pct := func(name string, p Percentiles) []string {
		return []string{name, ms(p.P50), ms(p.P95), ms(p.P99)}
	}
	if err := bench.WriteMarkdown(&b, []string{"milliseconds", "p50", "p95", "p99"}, [][]string{
		pct("latency", r.Latency), pct("time to first token (streams)", r.FirstToken),
	}); err != nil {
		return err
	}
	fmt.Fprintf(&b, "\ncompletion tokens: %d, %.1f tok/s\n", r.CompletionTokens, r.TokensPerSecond())

	if len(r.Procs) > 0 {
		b.WriteString("\n")
		var rows [][]string
		for _, p := range r.Procs {
			pid := "-"
			if p.PID != 0 {
				pid = strconv.Itoa(p.PID)
			}
			rows = append(rows, []string{p.Name, pid,
				change(p.Before.RSS>>20, p.After.RSS>>20),
				change(int64(p.Before.Goroutines), int64(p.After.Goroutines)),
				change(int64(p.Before.FDs), int64(p.After.FDs)),
				change(int64(p.Before.Threads), int64(p.After.Threads)),
			})
		}
		if err := bench.WriteMarkdown(&b, []string{"process", "pid", "RSS MB", "goroutines", "fds", "threads"}, rows); err != nil {
			return err
		}
	}

	b.WriteString("\n")
	for o := range Outcome(numOutcomes) {
		if o != OK && r.Counts[o] > 0 {
			fmt.Fprintf(&b, "first %s: %s\n", o, r.Examples[o])
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	if r.Passed() {
		b.WriteString("verdict: PASS\n")
	} else {
		b.WriteString("verdict: FAIL\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "  - %s\n", f)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ms shows a duration in milliseconds, "-" when unknown.
func ms(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
}

// change shows "before -> after (+diff)"; a figure that is unknown
// (negative) shows as "?", and "-" when neither is known.
func change(before, after int64) string {
	show := func(n int64) string {
		if n < 0 {
			return "?"
		}
		return strconv.FormatInt(n, 10)
	}
	switch {
	case before < 0 && after < 0:
		return "-"
	case before < 0 || after < 0:
		return show(before) + " -> " + show(after)
	}
	return fmt.Sprintf("%d -> %d (%+d)", before, after, after-before)
}
