package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// free samples the whole distribution: no top-k, top-p, min-p or penalties.
func free(temp float32, seed uint64) sampling {
	return sampling{Temp: temp, TopP: 1, PenaltyRepeat: 1, Seed: seed}
}

// frequencies draws n tokens from fresh copies of logits.
func frequencies(s *sampler, logits []float32, n int) []float64 {
	f := make([]float64, len(logits))
	buf := make([]float32, len(logits))
	for range n {
		copy(buf, logits)
		f[s.sample(buf)]++
	}
	for i := range f {
		f[i] /= float64(n)
	}
	return f
}

func TestSampleGreedyIsArgmax(t *testing.T) {
	logits := []float32{0.5, 3, -1, 2.9}
	s := newSampler(sampling{Temp: 0, TopK: 40, TopP: 0.95, MinP: 0.05, PenaltyRepeat: 1})
	for range 5 {
		if got := s.sample(slices.Clone(logits)); got != 1 {
			t.Fatalf("greedy picked %d, want 1", got)
		}
	}
}

func TestSampleFollowsTheDistribution(t *testing.T) {
	// softmax([0, ln 3]) = [0.25, 0.75]; at temperature 2 it is [1/(1+√3), √3/(1+√3)].
	logits := []float32{0, float32(math.Log(3))}
	for _, tc := range []struct {
		temp float32
		want float64
	}{
		{1, 0.75},
		{2, math.Sqrt(3) / (1 + math.Sqrt(3))},
		{0.5, 0.9}, // 9/(1+9)
	} {
		f := frequencies(newSampler(free(tc.temp, 1)), logits, 20000)
		if math.Abs(f[1]-tc.want) > 0.015 {
			t.Errorf("temperature %g: token 1 drawn %.3f of the time, want %.3f", tc.temp, f[1], tc.want)
		}
	}
}

func TestSampleTruncation(t *testing.T) {
	// probabilities 0.5, 0.3, 0.15, 0.05
	probs := []float64{0.5, 0.3, 0.15, 0.05}
	logits := make([]float32, len(probs))
	for i, p := range probs {
		logits[i] = float32(math.Log(p))
	}
	for _, tc := range []struct {
		name string
		p    sampling
		kept int // tokens 0..kept-1 may be drawn, the others never
	}{
		{"top_k 2", sampling{TopK: 2, TopP: 1}, 2},
		{"top_k 1", sampling{TopK: 1, TopP: 1}, 1},
		{"top_p 0.7", sampling{TopP: 0.7}, 2}, // 0.5 < 0.7 ≤ 0.8
		{"top_p 0.79", sampling{TopP: 0.79}, 2},
		{"top_p 0.81", sampling{TopP: 0.81}, 3},          // needs the third
		{"min_p 0.3", sampling{TopP: 1, MinP: 0.3}, 3},   // ≥ 0.15
		{"min_p 0.31", sampling{TopP: 1, MinP: 0.31}, 2}, // ≥ 0.155
		{"top_p 0.01 keeps one", sampling{TopP: 0.01}, 1},
		// min_p drops token 3 before sorting, but top_p still measures
		// against all four: 0.81 needs tokens 0-2 (0.95), not 0-1 (0.8 of
		// the 0.95 that is left, i.e. 0.84).
		{"top_p 0.81 with min_p 0.25", sampling{TopP: 0.81, MinP: 0.25}, 3},
		{"top_p 0.79 with min_p 0.05", sampling{TopP: 0.79, MinP: 0.05}, 2},
		{"top_k 3 then top_p 0.84", sampling{TopK: 3, TopP: 0.84}, 2}, // 0.5 + 0.3 ≥ 0.84 × 0.95
		{"all", sampling{TopP: 1}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.Temp, tc.p.PenaltyRepeat, tc.p.Seed = 1, 1, 7
			f := frequencies(newSampler(tc.p), logits, 4000)
			for i, x := range f {
				if drawn := x > 0; drawn != (i < tc.kept) {
					t.Errorf("token %d drawn %.3f of the time; want only tokens below %d drawn: %v", i, x, tc.kept, f)
				}
			}
		})
	}
}

func TestSamplePenalties(t *testing.T) {
	s := newSampler(sampling{Temp: 0, RepeatLastN: 3, PenaltyRepeat: 4, PenaltyFreq: 0.5, PenaltyPresent: 0.25})
	for _, tok := range []int{9, 1, 1, 2, 2} { // the window of 3 keeps 1, 2, 2
		s.accept(tok)
	}
	logits := []float32{1, 4, -2, 0}
	s.penalize(logits)
	want := []float32{1, 4.0/4 - 0.5 - 0.25, -2*4 - 2*0.5 - 0.25, 0}
	if !slices.Equal(logits, want) {
		t.Fatalf("penalized logits %v, want %v", logits, want)
	}
	// Token 1 led before the penalties; token 0 leads after them.
	if got := s.sample([]float32{1, 4, -2, 0}); got != 0 {
		t.Fatalf("greedy after penalties picked %d, want 0", got)
	}
}

// TestSampleOddLogits: NaN is never drawn, +Inf wins, and no logits at
// all is reported, whatever the fields — never a panic.
func TestSampleOddLogits(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	fields := map[string]sampling{
		"default":  {Temp: 1, TopK: 40, TopP: 0.95, MinP: 0.05, PenaltyRepeat: 1},
		"top_k 2":  {Temp: 1, TopK: 2, TopP: 1, PenaltyRepeat: 1},
		"no top_k": {Temp: 1, TopP: 0.95, MinP: 0.05, PenaltyRepeat: 1},
		"nothing":  {Temp: 1, TopP: 1, PenaltyRepeat: 1},
		"greedy":   {Temp: 0, PenaltyRepeat: 1},
	}
	for name, p := range fields {
		for _, tc := range []struct {
			logits []float32
			want   func(int) bool
		}{
			{[]float32{nan, 1, nan, 2}, func(tok int) bool { return tok == 1 || tok == 3 }},
			{[]float32{nan, nan, nan}, func(tok int) bool { return tok >= 0 && tok < 3 }},
			{[]float32{0, inf, 5}, func(tok int) bool { return tok == 1 }},
			{nil, func(tok int) bool { return tok == -1 }},
		} {
			for range 50 {
				if tok := newSampler(p).sample(slices.Clone(tc.logits)); !tc.want(tok) {
					t.Fatalf("%s, logits %v: drew %d", name, tc.logits, tok)
				}
			}
		}
	}
}

func TestSampleSeeds(t *testing.T) {
	logits := make([]float32, 1000) // flat: every token equally likely
	run := func(seed uint64) []int {
		s := newSampler(free(1, seed))
		var toks []int
		for range 20 {
			toks = append(toks, s.sample(slices.Clone(logits)))
		}
		return toks
	}
	if a, b := run(42), run(42); !slices.Equal(a, b) {
		t.Fatalf("seed 42 gave %v then %v", a, b)
	}
	if a, b := run(1), run(2); slices.Equal(a, b) {
		t.Fatalf("seeds 1 and 2 both gave %v", a)
	}
}

// TestTopKMatchesSorting checks the heap selection against a full sort on
// random logits, ties included.
func TestTopKMatchesSorting(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		n := 1 + r.IntN(300)
		logits := make([]float32, n)
		for i := range logits {
			logits[i] = float32(r.IntN(50)) / 4 // many ties
		}
		k := 1 + r.IntN(n)
		want := make(candidates, n)
		for i, l := range logits {
			want[i] = candidate{int32(i), l}
		}
		slices.SortFunc(want, byLogitDesc)
		got := (&sampler{}).topK(logits, k)
		if k == n {
			got, _ = (&sampler{sampling: sampling{TopP: 0.5}}).candidates(logits)
		}
		// Ties at the boundary may pick different ids; the logits must agree.
		for i := range k {
			if got[i].logit != want[i].logit || logits[got[i].id] != got[i].logit {
				t.Fatalf("round %d, n=%d k=%d: position %d is %v, want logit %v", round, n, k, i, got[i], want[i].logit)
			}
		}
	}
}

// BenchmarkSample is one draw over gemma3's 262,144-entry vocabulary, with
// the default fields (top-k 40) and with top-k off.
func BenchmarkSample(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	logits := make([]float32, 262144)
	for i := range logits {
		logits[i] = float32(r.NormFloat64() * 3)
	}
	buf := make([]float32, len(logits))
	for _, bc := range []struct {
		name string
		p    sampling
	}{
		{"default", sampling{Temp: 1, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatLastN: 64, PenaltyRepeat: 1.1}},
		{"top_k=0", sampling{Temp: 1, TopP: 0.95, MinP: 0.05, PenaltyRepeat: 1}},
		{"top_k=0,top_p=1,min_p=0", sampling{Temp: 1, TopP: 1, PenaltyRepeat: 1}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newSampler(bc.p)
			for b.Loop() {
				copy(buf, logits)
				s.accept(s.sample(buf))
			}
		})
	}
}

// BenchmarkSampleLogprobs is BenchmarkSample's default draw with logprobs:
// the extra cost per token of logprobs over gemma3's vocabulary.
func BenchmarkSampleLogprobs(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	logits := make([]float32, 262144)
	for i := range logits {
		logits[i] = float32(r.NormFloat64() * 3)
	}
	buf := make([]float32, len(logits))
	for _, top := range []int{-1, 0, 5, 20} {
		name := fmt.Sprintf("top_logprobs=%d", top)
		if top < 0 {
			name = "off"
		}
		b.Run(name, func(b *testing.B) {
			s := newSampler(sampling{Temp: 1, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatLastN: 64, PenaltyRepeat: 1.1,
				Logprobs: top >= 0, TopLogprobs: max(top, 0)})
			for b.Loop() {
				copy(buf, logits)
				s.accept(s.sample(buf))
			}
		})
	}
}

// allowOnly is a constraint that allows the tokens in its set and counts
// its masks; with noShortlist its filter keeps nothing, so that every
// refused draw is redrawn from the masked logits.
type allowOnly struct {
	set         map[int]bool
	noShortlist bool
	masks       int
}

func (a *allowOnly) allows(tok int) bool { return a.set[tok] }

func (a *allowOnly) filter(c candidates) candidates {
	if a.noShortlist {
		return c[:0]
	}
	return slices.DeleteFunc(c, func(x candidate) bool { return !a.set[int(x.id)] })
}

// mask costs the whole vocabulary, so it is never cheap.
func (a *allowOnly) mask(logits []float32, limit int) (done, any bool) {
	if limit > 0 {
		return false, false
	}
	a.masks++
	for i := range logits {
		if !a.set[i] {
			logits[i] = float32(math.Inf(-1))
		} else if logits[i] > float32(math.Inf(-1)) {
			any = true
		}
	}
	return true, any
}

func (*allowOnly) accept(int) {}

// TestRedrawMatchesTheMask checks that a draw the constraint refuses is
// redrawn from the most likely tokens exactly as from the masked logits:
// the same tokens from the same seed, greedy and with top-k. When many
// tokens are allowed the most likely settle every redraw and nothing is
// masked (when a tenth are, after widening the shortlist once); when
// few are, the most likely do not and the mask decides.
func TestRedrawMatchesTheMask(t *testing.T) {
	const vocab = 4096
	rng := rand.New(rand.NewPCG(7, 8))
	logits := make([]float32, vocab)
	for i := range logits {
		logits[i] = float32(rng.NormFloat64() * 3)
	}
	best := argmax(logits)
	many, few := map[int]bool{}, map[int]bool{}
	for i := range vocab {
		if i != best && rng.IntN(2) == 0 {
			many[i] = true // half the tokens, never the most likely
		}
	}
	median := slices.Clone(logits)
	slices.Sort(median)
	sparse := map[int]bool{}
	for len(sparse) < vocab/10 {
		if i := rng.IntN(vocab); i != best {
			sparse[i] = true // a tenth: too few among the 256 most likely for top-k 40
		}
	}
	for len(few) < 30 {
		if i := rng.IntN(vocab); logits[i] < median[vocab/2] {
			few[i] = true // none among the most likely
		}
	}
	for _, tc := range []struct {
		name      string
		set       map[int]bool
		p         sampling
		wantMasks bool
	}{
		{"greedy, many allowed", many, sampling{Temp: 0, PenaltyRepeat: 1}, false},
		{"top-k, many allowed", many, sampling{Temp: 1, TopK: 40, TopP: 0.95, MinP: 0.05, PenaltyRepeat: 1}, false},
		{"top-k 1000, many allowed", many, sampling{Temp: 1.5, TopK: 1000, TopP: 1, PenaltyRepeat: 1}, false},
		{"top-k, a tenth allowed", sparse, sampling{Temp: 1, TopK: 40, TopP: 0.95, MinP: 0.05, PenaltyRepeat: 1}, false},
		{"greedy, few allowed", few, sampling{Temp: 0, PenaltyRepeat: 1}, true},
		{"top-k, few allowed", few, sampling{Temp: 1, TopK: 40, TopP: 0.95, MinP: 0.05, PenaltyRepeat: 1}, true},
		{"no top-k, many allowed", many, sampling{Temp: 1, TopP: 0.9, PenaltyRepeat: 1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused := 0
			for seed := range uint64(200) {
				p := tc.p
				p.Seed = seed
				short := &allowOnly{set: tc.set}
				masked := &allowOnly{set: tc.set, noShortlist: true}
				p.Constraint = short
				got := newSampler(p).sample(slices.Clone(logits))
				p.Constraint = masked
				want := newSampler(p).sample(slices.Clone(logits))
				if got != want {
					t.Fatalf("seed %d: drew %d, from the masked logits %d", seed, got, want)
				}
				if !tc.set[got] {
					t.Fatalf("seed %d: drew %d, which is not allowed", seed, got)
				}
				if masked.masks == 0 {
					continue // the first draw was allowed: nothing redrawn
				}
				refused++
				if (short.masks > 0) != tc.wantMasks {
					t.Fatalf("seed %d: %d masks, want masks: %v", seed, short.masks, tc.wantMasks)
				}
			}
			if refused < 50 {
				t.Fatalf("only %d of 200 first draws refused", refused)
			}
		})
	}
}
