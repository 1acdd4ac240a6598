package engine

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"

	"github.com/hashicorp/go-hclog"
	"github.com/ollama/ollama/llama"
	"github.com/ollama/ollama/ml"
)

// QualityConfig is what Compare measures two files of one model on.
type QualityConfig struct {
	// Prompts are continued greedily by the reference for Tokens tokens
	// each; the candidate is then scored on the reference's continuation.
	Prompts []string
	// Tokens per prompt; default 64.
	Tokens int
	// Text is scored for perplexity by both files; empty: not measured.
	Text    string
	Threads int
	Logger  hclog.Logger
}

// QualityReport holds Compare's figures. Agreement is the share of the
// reference's greedy tokens that the candidate also ranks first, given the
// same text before it (teacher-forced, so one early difference does not
// count against every later token); 1 means the candidate would have
// written exactly the reference's answers.
type QualityReport struct {
	Tokens    int     // greedy tokens compared
	Agree     int     // of them, the candidate's argmax too
	Agreement float64 // Agree / Tokens
	// Perplexity of Text under each file (0 without Text), over TextTokens
	// predicted tokens.
	TextTokens          int
	RefPerplexity       float64
	CandidatePerplexity float64
}

// ErrVocabMismatch is returned when the two files do not share a
// vocabulary, so their tokens cannot be compared.
var ErrVocabMismatch = errors.New("the two models do not share a vocabulary")

// Compare measures how far candidate (say a Q4_0 file) strays from ref (the
// same model in Q8_0 or F16): greedy agreement on Prompts and perplexity on
// Text. It is the quality check for choosing a quantisation, and meaningful
// only on trained weights.
func Compare(ref, candidate string, cfg QualityConfig) (QualityReport, error) {
	if cfg.Tokens <= 0 {
		cfg.Tokens = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if len(cfg.Prompts) == 0 && cfg.Text == "" {
		return QualityReport{}, errors.New("nothing to compare: no prompts and no text")
	}
	backendOnce.Do(func() { initBackend(cfg.Logger) })
	r, err := openScorer(ref, cfg)
	if err != nil {
		return QualityReport{}, fmt.Errorf("reference: %w", err)
	}
	defer r.close()
	c, err := openScorer(candidate, cfg)
	if err != nil {
		return QualityReport{}, fmt.Errorf("candidate: %w", err)
	}
	defer c.close()
	if r.m.NumVocab() != c.m.NumVocab() {
		return QualityReport{}, fmt.Errorf("%w: %d and %d tokens", ErrVocabMismatch, r.m.NumVocab(), c.m.NumVocab())
	}

	var rep QualityReport
	for _, p := range cfg.Prompts {
		prompt, err := r.m.Tokenize(p, true, true)
		if err != nil {
			return rep, fmt.Errorf("tokenize prompt %q: %w", p, err)
		}
		if cp, err := c.m.Tokenize(p, true, true); err != nil || !slices.Equal(prompt, cp) {
			return rep, fmt.Errorf("%w: they tokenize %q differently", ErrVocabMismatch, p)
		}
		answer, err := r.greedy(prompt, cfg.Tokens)
		if err != nil {
			return rep, fmt.Errorf("reference, prompt %q: %w", p, err)
		}
		// The candidate reads prompt+answer in one pass; its argmax after
		// each prefix is what it would have written there.
		seq := slices.Concat(prompt, answer)
		var agree int
		err = c.score(seq, func(i int, logits []float32) {
			if i >= len(prompt)-1 && i < len(seq)-1 && argmax(logits) == seq[i+1] {
				agree++
			}
		})
		if err != nil {
			return rep, fmt.Errorf("candidate, prompt %q: %w", p, err)
		}
		rep.Tokens += len(answer)
		rep.Agree += agree
	}
	if rep.Tokens > 0 {
		rep.Agreement = float64(rep.Agree) / float64(rep.Tokens)
	}
	if cfg.Text != "" {
		toks, err := r.m.Tokenize(cfg.Text, true, false)
		if err != nil {
			return rep, fmt.Errorf("tokenize text: %w", err)
		}
		if rep.RefPerplexity, err = r.perplexity(toks); err != nil {
			return rep, fmt.Errorf("reference: %w", err)
		}
		if rep.CandidatePerplexity, err = c.perplexity(toks); err != nil {
			return rep, fmt.Errorf("candidate: %w", err)
		}
		rep.TextTokens = len(toks) - 1
	}
	return rep, nil
}

// scorer is one model with a one-sequence context, read token by token
// with the logits of every position.
type scorer struct {
	m       *llama.Model
	ctx     *llama.Context
	threads *threadpool
	batch   *llama.Batch
	n       int // batch and context size
}

func openScorer(path string, cfg QualityConfig) (*scorer, error) {
	m, err := llama.LoadModelFromFile(path, llama.ModelParams{UseMmap: true})
	if err != nil {
		return nil, err
	}
	const n = 512
	threads := cfg.Threads
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	// The llama package cannot free a context: Compare is for a tool or a
	// test, which opens a few.
	ctx, err := llama.NewContextWithModel(m, llama.NewContextParams(n, n, 1, threads, ml.FlashAttentionAuto, "f16"))
	if err != nil {
		llama.FreeModel(m)
		return nil, err
	}
	pool, err := attachThreadpool(ctx, 1, threads)
	if err != nil {
		llama.FreeModel(m)
		return nil, err
	}
	batch, err := llama.NewBatch(n, 1, 0)
	if err != nil {
		pool.free()
		llama.FreeModel(m)
		return nil, err
	}
	return &scorer{m: m, ctx: ctx, threads: pool, batch: batch, n: n}, nil
}

func (s *scorer) close() {
	s.batch.Free()
	s.threads.free()
	llama.FreeModel(s.m)
}

// score runs seq through the model from an empty cache and hands each
// position's logits (the prediction of the token after it) to f.
func (s *scorer) score(seq []int, f func(i int, logits []float32)) error {
	if len(seq) > s.n {
		return fmt.Errorf("%d tokens: at most %d", len(seq), s.n)
	}
	s.ctx.KvCacheSeqRm(0, -1, -1)
	s.batch.Clear()
	for i, t := range seq {
		s.batch.Add(t, nil, i, true, 0)
	}
	if err := s.ctx.Decode(s.batch); err != nil {
		return err
	}
	for i := range seq {
		f(i, s.ctx.GetLogitsIth(i))
	}
	return nil
}

// greedy continues prompt with the model's most likely token, n times or
// until an end-of-generation token, and returns the continuation (with that
// token: whether the candidate ends there too counts).
func (s *scorer) greedy(prompt []int, n int) ([]int, error) {
	if len(prompt)+n > s.n {
		return nil, fmt.Errorf("%d prompt tokens and %d more: at most %d", len(prompt), n, s.n)
	}
	s.ctx.KvCacheSeqRm(0, -1, -1)
	var out []int
	next, pos := prompt, 0
	for range n {
		s.batch.Clear()
		for j, t := range next {
			s.batch.Add(t, nil, pos+j, j == len(next)-1, 0)
		}
		if err := s.ctx.Decode(s.batch); err != nil {
			return nil, err
		}
		pos += len(next)
		tok := argmax(s.ctx.GetLogitsIth(len(next) - 1))
		out = append(out, tok)
		if s.m.TokenIsEog(tok) {
			break
		}
		next = []int{tok}
	}
	return out, nil
}

// perplexity is exp of the mean negative log-likelihood of each token of
// toks given those before it.
func (s *scorer) perplexity(toks []int) (float64, error) {
	if len(toks) < 2 {
		return 0, errors.New("text too short: fewer than 2 tokens")
	}
	var nll float64
	err := s.score(toks, func(i int, logits []float32) {
		if i < len(toks)-1 {
			nll -= float64(logits[toks[i+1]]) - logSumExp(logits)
		}
	})
	if err != nil {
		return 0, err
	}
	return math.Exp(nll / float64(len(toks)-1)), nil
}
