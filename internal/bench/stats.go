package bench

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0–100) of xs by linear
// interpolation between the closest ranks; NaN for no values. xs need not
// be sorted and is not modified.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if p <= 0 {
		return s[0]
	}
	if p >= 100 {
		return s[len(s)-1]
	}
	rank := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(rank))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (s[hi]-s[lo])*(rank-float64(lo))
}

// Sample is the outcome of one request.
type Sample struct {
	Start            time.Time
	FirstToken       time.Duration // from Start to the first content; 0 if none came
	LastToken        time.Duration // from Start to the last content
	Latency          time.Duration // from Start to the end of the response
	PromptTokens     int           // as the server counted them (usage)
	CompletionTokens int           // as the server counted them, else content chunks
	CachedTokens     int           // prompt tokens the server found cached (usage.prompt_tokens_details)
	UsageReported    bool          // the server sent usage
	Text             string        // the completion, kept only when asked
	Err              error
}

// StreamRate is the generation speed seen by this request's client: the
// tokens after the first over the time between the first and the last
// token, so that the prompt and queueing do not count. NaN when it cannot
// be told (fewer than two tokens, or all in one chunk).
func (s Sample) StreamRate() float64 {
	d := (s.LastToken - s.FirstToken).Seconds()
	if s.Err != nil || s.CompletionTokens < 2 || d <= 0 {
		return math.NaN()
	}
	return float64(s.CompletionTokens-1) / d
}

// Row summarises one workload level (a prompt length at a concurrency) on
// one endpoint.
type Row struct {
	Prompt      int // target prompt length in tokens
	Concurrency int

	Requests     int // finished, with or without error
	Errors       int
	PromptTokens float64 // mean prompt_tokens the server counted
	Completion   float64 // mean completion tokens

	TTFTp50, TTFTp99       time.Duration
	StreamTokS             float64 // per-stream generation tok/s, median over requests
	AggregateTokS          float64 // completion tokens of all requests / wall time
	LatencyP50, LatencyP99 time.Duration

	Wall    time.Duration // wall time of the level (all rounds summed)
	RSS     int64         // resident bytes of the watched processes after the level; 0: not watched
	PeakRSS int64         // their VmHWM after the level
	Load1   float64       // 1-minute load average after the level; NaN: unknown
}

// Summarize builds a Row from the samples of one level and its wall time.
func Summarize(prompt, concurrency int, samples []Sample, wall time.Duration) Row {
	r := Row{Prompt: prompt, Concurrency: concurrency, Requests: len(samples), Wall: wall, Load1: math.NaN()}
	var ttft, lat, rate []float64
	var promptSum, complSum, ok int
	for _, s := range samples {
		if s.Err != nil {
			r.Errors++
			continue
		}
		ok++
		promptSum += s.PromptTokens
		complSum += s.CompletionTokens
		if s.FirstToken > 0 {
			ttft = append(ttft, float64(s.FirstToken))
		}
		lat = append(lat, float64(s.Latency))
		if v := s.StreamRate(); !math.IsNaN(v) {
			rate = append(rate, v)
		}
	}
	if ok > 0 {
		r.PromptTokens = float64(promptSum) / float64(ok)
		r.Completion = float64(complSum) / float64(ok)
	}
	r.TTFTp50, r.TTFTp99 = dur(Percentile(ttft, 50)), dur(Percentile(ttft, 99))
	r.LatencyP50, r.LatencyP99 = dur(Percentile(lat, 50)), dur(Percentile(lat, 99))
	r.StreamTokS = Percentile(rate, 50)
	r.AggregateTokS = math.NaN()
	if wall > 0 && ok > 0 {
		r.AggregateTokS = float64(complSum) / wall.Seconds()
	}
	return r
}

// dur converts a float of nanoseconds back; NaN becomes -1 (shown as "-").
func dur(ns float64) time.Duration {
	if math.IsNaN(ns) {
		return -1
	}
	return time.Duration(ns)
}
