package model

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/term"
)

// How often progress is reported: a terminal line is redrawn at most every
// drawEvery; a log line is written every logEvery or every logStep percent.
const (
	drawEvery = 200 * time.Millisecond
	logEvery  = 5 * time.Second
	logStep   = 10
)

// progress reports a download's bytes, percentage, rate and time left.
type progress struct {
	name        string
	total       int64 // 0: unknown
	done        int64
	startBytes  int64 // bytes already there when this attempt began
	start       time.Time
	tty         io.Writer // non-nil: redraw one line here
	log         hclog.Logger
	lastReport  time.Time
	lastPercent int64
	lastDone    int64
}

func newProgress(name string, have, total int64, out io.Writer, log hclog.Logger) *progress {
	p := &progress{
		name: name, total: total, done: have, startBytes: have,
		start: time.Now(), log: log,
	}
	if isTerminal(out) {
		p.tty = out
	}
	p.report(p.start)
	return p
}

// isTerminal reports whether w is a terminal, where a line can be redrawn.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// set records that done bytes are now present, reporting when it is time.
func (p *progress) set(done int64) {
	p.done = done
	now := time.Now()
	if p.tty != nil {
		if now.Sub(p.lastReport) >= drawEvery {
			p.report(now)
		}
		return
	}
	if now.Sub(p.lastReport) >= logEvery || p.percent()/logStep > p.lastPercent/logStep {
		p.report(now)
	}
}

// finish reports the final state, unless it was just reported, and ends
// the terminal line.
func (p *progress) finish() {
	if p.done != p.lastDone || p.tty != nil {
		p.report(time.Now())
	}
	if p.tty != nil {
		fmt.Fprintln(p.tty)
	}
}

func (p *progress) report(now time.Time) {
	p.lastReport, p.lastPercent, p.lastDone = now, p.percent(), p.done
	rate := p.rate(now)
	if p.tty != nil {
		// The trailing spaces erase the end of a longer previous line.
		fmt.Fprintf(p.tty, "\r%s  %s    ", p.name, p.line(rate))
		return
	}
	args := []any{"done", formatBytes(p.done), "rate", formatBytes(int64(rate)) + "/s"}
	if p.total > 0 {
		args = append(args, "total", formatBytes(p.total), "percent", p.lastPercent, "eta", p.eta(rate).String())
	}
	p.log.Info("downloading", args...)
}

// line is the terminal form: "120.0 MiB / 278.0 MiB  43%  12.5 MiB/s  ETA 13s".
func (p *progress) line(rate float64) string {
	if p.total <= 0 {
		return fmt.Sprintf("%s  %s/s", formatBytes(p.done), formatBytes(int64(rate)))
	}
	return fmt.Sprintf("%s / %s  %3d%%  %s/s  ETA %s",
		formatBytes(p.done), formatBytes(p.total), p.percent(), formatBytes(int64(rate)), p.eta(rate))
}

func (p *progress) percent() int64 {
	if p.total <= 0 {
		return 0
	}
	return p.done * 100 / p.total
}

// rate is in bytes per second, over this attempt only.
func (p *progress) rate(now time.Time) float64 {
	secs := now.Sub(p.start).Seconds()
	if secs <= 0 {
		return 0
	}
	return float64(p.done-p.startBytes) / secs
}

// eta is the time left at the current rate, rounded to the second.
func (p *progress) eta(rate float64) time.Duration {
	if rate <= 0 || p.total <= p.done {
		return 0
	}
	return time.Duration(float64(p.total-p.done) / rate * float64(time.Second)).Round(time.Second)
}

// formatBytes renders n in binary units: "512 B", "1.5 KiB", "278.0 MiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
