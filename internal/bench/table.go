package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// WriteTable writes rows as a Markdown table (it pastes into
// docs/PERFORMANCE.md as it is), columns padded to line up in a terminal.
func WriteTable(w io.Writer, rows []Row) error {
	header := []string{"prompt", "conc", "reqs", "prompt tok", "compl tok",
		"TTFT p50", "TTFT p99", "stream tok/s", "aggr tok/s",
		"lat p50", "lat p99", "errors", "RSS MB", "peak MB", "load"}
	cells := make([][]string, 0, len(rows))
	for _, r := range rows {
		cells = append(cells, []string{
			fmt.Sprint(r.Prompt), fmt.Sprint(r.Concurrency), fmt.Sprint(r.Requests),
			num(r.PromptTokens, 0), num(r.Completion, 0),
			ms(r.TTFTp50), ms(r.TTFTp99), num(r.StreamTokS, 1), num(r.AggregateTokS, 1),
			ms(r.LatencyP50), ms(r.LatencyP99), fmt.Sprint(r.Errors),
			mb(r.RSS), mb(r.PeakRSS), num(r.Load1, 2),
		})
	}
	return WriteMarkdown(w, header, cells)
}

// Ratio compares endpoint B with endpoint A on one row.
type Ratio struct {
	A, B Row
}

// WriteRatios writes, per row, the headline figures of A and B and B/A.
// Above 1 is better for B on tok/s, below 1 is better for B on times.
func WriteRatios(w io.Writer, ratios []Ratio) error {
	header := []string{"prompt", "conc",
		"aggr tok/s A", "aggr tok/s B", "aggr B/A",
		"stream tok/s A", "stream tok/s B", "stream B/A",
		"TTFT p50 A", "TTFT p50 B", "TTFT B/A",
		"lat p50 B/A", "errors A/B"}
	cells := make([][]string, 0, len(ratios))
	for _, q := range ratios {
		a, b := q.A, q.B
		cells = append(cells, []string{
			fmt.Sprint(a.Prompt), fmt.Sprint(a.Concurrency),
			num(a.AggregateTokS, 1), num(b.AggregateTokS, 1), ratio(b.AggregateTokS, a.AggregateTokS),
			num(a.StreamTokS, 1), num(b.StreamTokS, 1), ratio(b.StreamTokS, a.StreamTokS),
			ms(a.TTFTp50), ms(b.TTFTp50), ratio(float64(b.TTFTp50), float64(a.TTFTp50)),
			ratio(float64(b.LatencyP50), float64(a.LatencyP50)),
			fmt.Sprintf("%d/%d", a.Errors, b.Errors),
		})
	}
	return WriteMarkdown(w, header, cells)
}

// WriteMarkdown writes a Markdown table: the header cells left-aligned, the
// rows' right-aligned, every column padded to line up in a terminal.
func WriteMarkdown(w io.Writer, header []string, rows [][]string) error {
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	var b strings.Builder
	line := func(cells []string, pad func(string, int) string) {
		b.WriteString("|")
		for i, c := range cells {
			b.WriteString(" " + pad(c, width[i]) + " |")
		}
		b.WriteString("\n")
	}
	left := func(s string, n int) string { return s + strings.Repeat(" ", n-len(s)) }
	right := func(s string, n int) string { return strings.Repeat(" ", n-len(s)) + s }
	line(header, left)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i]-1) + ":"
	}
	line(sep, left)
	for _, r := range rows {
		line(r, right)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ms shows a duration in milliseconds; negative means unknown.
func ms(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	v := float64(d) / float64(time.Millisecond)
	if v < 10 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func ratio(b, a float64) string {
	if a <= 0 || b < 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "-"
	}
	return fmt.Sprintf("%.2f", b/a)
}

func mb(n int64) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(n)/(1<<20))
}
