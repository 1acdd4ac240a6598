// Package engine runs one GGUF model through llama.cpp (github.com/ollama/ollama/llama)
// and decodes many chat requests at once: continuous batching over one llama
// context, one sequence id per request, requests joining and leaving between
// decode steps.
//
// One goroutine, the loop, owns the llama context. Generate hands it a
// sequence and waits for text; the loop never blocks on a caller, so a slow
// consumer cannot stall the others.
package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/ollama/ollama/llama"
	"github.com/ollama/ollama/ml"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/model"
)

// Config configures an Engine. Zero values take the defaults described on
// each field.
type Config struct {
	// ModelPath is a local GGUF file (see internal/model for URLs).
	ModelPath string
	// ModelName is the name the model is served under; default: the file
	// name without extension.
	ModelName string
	// Threads used by llama.cpp; default: the number of CPUs.
	Threads int
	// Parallel is how many sequences are decoded together (slots); default 8.
	Parallel int
	// ContextPerSeq is the context of one request, prompt plus completion, in
	// tokens; default 2048, capped by the model's training context.
	ContextPerSeq int
	// BatchSize bounds the tokens of one decode step; default 512.
	BatchSize int
	// PrefillChunk bounds the prompt tokens processed between two decode
	// steps while other sequences are generating, so that a long prompt
	// delays their next token by one chunk at most; default 32. Alone, a
	// prompt is processed BatchSize at a time.
	PrefillChunk int
	// QueueSize bounds the requests waiting for a free slot; past it
	// Generate fails with ErrOverloaded. Default 4×Parallel; negative: none.
	QueueSize int
	// MaxQueueWait bounds how long a request may expect to wait for a slot,
	// judged from how fast slots have been freeing (see admission); past it
	// Generate fails with ErrOverloaded, as past QueueSize, and the error's
	// RetryAfter says when the queue is expected to have room. Default 30s;
	// negative: no bound but QueueSize.
	MaxQueueWait time.Duration
	// DefaultMaxTokens applies when a request sets none, shortened to the
	// room its prompt leaves in the context (a long prompt gets a shorter
	// answer, not a refusal); default 512. It is the only default of
	// max_tokens in the mesh: the caller owns only the upper limit.
	DefaultMaxTokens int
	// FlashAttention: "auto" (default), "on" or "off".
	FlashAttention string
	// KVCacheType is how the KV cache stores keys and values: "f16"
	// (default), or "q8_0" / "q4_0", which take about 1/2 and 1/4 of the
	// memory at some cost in accuracy and need flash attention.
	KVCacheType string
	// NoPromptCache turns prompt-prefix reuse off: every request then
	// clears its slot's KV cache and processes its whole prompt. By
	// default a slot keeps its tokens after a request ends, and a new
	// request goes to the free slot sharing the longest prefix with it
	// (a conversation's earlier turns) and processes only the rest.
	NoPromptCache bool
	Logger        hclog.Logger
}

func (c *Config) setDefaults() {
	if c.Threads <= 0 {
		c.Threads = runtime.NumCPU()
	}
	if c.Parallel <= 0 {
		c.Parallel = 8
	}
	if c.ContextPerSeq <= 0 {
		c.ContextPerSeq = 2048
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 512
	}
	if c.PrefillChunk <= 0 {
		c.PrefillChunk = 32
	}
	c.PrefillChunk = min(c.PrefillChunk, c.BatchSize)
	if c.QueueSize == 0 {
		c.QueueSize = 4 * c.Parallel
	}
	c.QueueSize = max(c.QueueSize, 0)
	if c.MaxQueueWait == 0 {
		c.MaxQueueWait = 30 * time.Second
	}
	if c.DefaultMaxTokens <= 0 {
		c.DefaultMaxTokens = 512
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.FlashAttention == "" {
		c.FlashAttention = "auto"
	}
	if c.KVCacheType == "" {
		c.KVCacheType = "f16"
	}
}

// Check refuses settings llama.cpp would misread or reject, before a model
// is at hand (Open checks them again, and the model against them).
func (c Config) Check() error {
	c.setDefaults()
	if !slices.Contains([]string{"auto", "on", "off"}, c.FlashAttention) {
		return fmt.Errorf("flash attention %q: want auto, on or off", c.FlashAttention)
	}
	if !slices.Contains([]string{"f16", "q8_0", "q4_0"}, c.KVCacheType) {
		return fmt.Errorf("KV cache type %q: want f16, q8_0 or q4_0", c.KVCacheType)
	}
	if c.KVCacheType != "f16" && c.FlashAttention == "off" {
		return fmt.Errorf("KV cache type %s needs flash attention (auto or on)", c.KVCacheType)
	}
	return nil
}

// GoMaxProcs is the GOMAXPROCS for a process whose engine runs llama.cpp on
// threads threads (0: one per CPU): the CPUs llama.cpp leaves, at least one.
//
// llama.cpp's threads wait for each other at every operation, hundreds of
// times a token, spinning. A Go thread that takes one of their cores for a
// moment — the scheduler looking for work, a collection, a network write —
// stalls the whole step. The Go side of an inference process needs little
// CPU, and goroutines still run while the loop is inside llama.cpp (a cgo
// call gives up its P). Measured on 2 CPUs with 2 llama.cpp threads:
// GOMAXPROCS 1 served 12–25% more tokens per second than 2 at 1, 2, 4 and
// 16 concurrent requests, and as many at 8 (docs/PERFORMANCE.md).
//
// It never exceeds the runtime's current GOMAXPROCS, which already honours
// a container's CPU quota.
func GoMaxProcs(threads int) int {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	return max(1, min(runtime.GOMAXPROCS(0), runtime.NumCPU()-threads))
}

// Stats is a snapshot of the engine's state, for /health and /metrics.
type Stats struct {
	Model            string
	Template         string
	Slots            int    // sequences that can be decoded together
	Busy             int    // slots in use
	Queued           int    // requests waiting for a slot
	ContextPerSeq    int    // tokens per request
	Requests         uint64 // requests finished (any outcome)
	PromptTokens     uint64 // prompt tokens of admitted requests, cached ones included
	CachedTokens     uint64 // of PromptTokens, those found in a slot's KV cache
	CompletionTokens uint64
	Steps            uint64 // decode steps
	// QueueWait is how long a request arriving now is expected to wait for
	// a slot (0 when one is free or nothing has been measured yet); past
	// Config.MaxQueueWait it is refused.
	QueueWait time.Duration
	// Created is the model file's modification time, which the API
	// reports as the model's "created"; zero if unknown.
	Created time.Time
}

// Engine serves one model. Create it with Open; it is safe for concurrent use.
type Engine struct {
	cfg     Config
	log     hclog.Logger
	name    string
	created time.Time // the model file's modification time
	render  *renderer
	tokens  *promptTokenizer

	model *llama.Model
	lctx  *llama.Context
	batch *llama.Batch

	mu       sync.Mutex
	queue    []*sequence // waiting for a slot, oldest first
	slots    []*sequence // index = llama sequence id; nil = free
	cache    []slotCache // index = llama sequence id; what a free slot's KV cache holds
	tick     uint64      // requests that left a cache, the clock of slotCache.used
	hold     holdTime    // how long requests keep a slot
	draining bool
	wake     chan struct{} // cap 1: something changed for the loop

	quit     chan struct{}
	loopDone chan struct{}
	plan     planner

	requests, promptTokens, cachedTokens, completionTokens, steps atomic.Uint64

	gvocab vocabOnce // the vocabulary grammars read (grammar.go)
}

// backendOnce initialises llama.cpp's backends once per process.
var backendOnce sync.Once

// Open validates and loads the model and starts the decode loop.
func Open(cfg Config) (*Engine, error) {
	cfg.setDefaults()
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	info, err := model.Validate(cfg.ModelPath)
	if err != nil {
		return nil, err
	}
	var created time.Time
	if fi, err := os.Stat(cfg.ModelPath); err == nil {
		created = fi.ModTime()
	}
	name := cfg.ModelName
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(cfg.ModelPath), filepath.Ext(cfg.ModelPath))
	}
	if k, v := info.HeadDimK, info.HeadDimV; cfg.KVCacheType != "f16" && (k == 0 || v == 0 || k%32 != 0 || v%32 != 0) {
		// llama.cpp quantizes the cache in blocks of 32 per head; with
		// flash attention "on" it aborts the process on anything else.
		if k == 0 || v == 0 {
			return nil, fmt.Errorf("KV cache type %s needs attention heads whose sizes are multiples of 32; %s does not say its head sizes",
				cfg.KVCacheType, filepath.Base(cfg.ModelPath))
		}
		return nil, fmt.Errorf("KV cache type %s needs attention heads whose sizes are multiples of 32; %s has keys of %d and values of %d",
			cfg.KVCacheType, filepath.Base(cfg.ModelPath), k, v)
	}
	if info.ContextLength > 0 && cfg.ContextPerSeq > int(info.ContextLength) {
		cfg.ContextPerSeq = int(info.ContextLength)
	}
	r, err := newRenderer(info.ChatTemplate)
	if err != nil {
		return nil, err
	}

	backendOnce.Do(func() { initBackend(cfg.Logger) })

	m, err := llama.LoadModelFromFile(cfg.ModelPath, llama.ModelParams{UseMmap: true})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", cfg.ModelPath, err)
	}
	tok, err := newPromptTokenizer(m, info.Tokenizer)
	if err != nil {
		llama.FreeModel(m)
		return nil, err
	}
	fa := ml.FlashAttentionAuto
	switch cfg.FlashAttention {
	case "on":
		fa = ml.FlashAttentionEnabled
	case "off":
		fa = ml.FlashAttentionDisabled
	}
	params := llama.NewContextParams(cfg.ContextPerSeq*cfg.Parallel, cfg.BatchSize, cfg.Parallel, cfg.Threads, fa, cfg.KVCacheType)
	lctx, err := llama.NewContextWithModel(m, params)
	if err != nil {
		llama.FreeModel(m)
		return nil, fmt.Errorf("create context for %s: %w", cfg.ModelPath, err)
	}
	batch, err := llama.NewBatch(cfg.BatchSize, cfg.Parallel, 0)
	if err != nil {
		llama.FreeModel(m)
		return nil, err
	}

	e := &Engine{
		cfg:      cfg,
		log:      cfg.Logger,
		name:     name,
		created:  created,
		render:   r,
		tokens:   tok,
		model:    m,
		lctx:     lctx,
		batch:    batch,
		slots:    make([]*sequence, cfg.Parallel),
		cache:    make([]slotCache, cfg.Parallel),
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	e.log.Info("model loaded", "model", name, "arch", info.Architecture, "template", r.name,
		"parallel", cfg.Parallel, "ctx_per_seq", cfg.ContextPerSeq, "threads", cfg.Threads,
		"batch", cfg.BatchSize, "queue", cfg.QueueSize, "max_queue_wait", cfg.MaxQueueWait, "flash_attention", cfg.FlashAttention, "kv_cache_type", cfg.KVCacheType, "prompt_cache", !cfg.NoPromptCache)
	go e.loop(e.quit)
	return e, nil
}

// Name is the name the model is served under.
func (e *Engine) Name() string { return e.name }

// Stats returns a snapshot of the engine's state.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	busy := 0
	for _, s := range e.slots {
		if s != nil {
			busy++
		}
	}
	queued := len(e.queue)
	_, wait, _ := e.admission().judge(queued - (len(e.slots) - busy))
	e.mu.Unlock()
	return Stats{
		Model:            e.name,
		Created:          e.created,
		Template:         e.render.name,
		Slots:            e.cfg.Parallel,
		Busy:             busy,
		Queued:           queued,
		QueueWait:        wait,
		ContextPerSeq:    e.cfg.ContextPerSeq,
		Requests:         e.requests.Load(),
		PromptTokens:     e.promptTokens.Load(),
		CachedTokens:     e.cachedTokens.Load(),
		CompletionTokens: e.completionTokens.Load(),
		Steps:            e.steps.Load(),
	}
}

// Request is what Generate takes: a chat request, or (Prompt set) raw text
// that is tokenized as it is, control tokens included, for completion-style
// use and tests. A client's text is only ever in Messages.
type Request struct {
	chat.Request
	// Prompt, when not empty, replaces the rendered messages.
	Prompt string
}

// Generate runs one request to completion. onDelta receives each new piece
// of text as it is decoded (never a split UTF-8 character, never part of a
// stop string); an error from onDelta cancels the generation. When ctx ends
// the sequence is freed at the next step and ctx's error is returned.
func (e *Engine) Generate(ctx context.Context, req Request, onDelta func(string) error) (chat.Result, error) {
	var f func(chat.Delta) error
	if onDelta != nil {
		f = func(d chat.Delta) error {
			if d.Content == "" {
				return nil
			}
			return onDelta(d.Content)
		}
	}
	return e.GenerateDeltas(ctx, req, f)
}

// GenerateDeltas is Generate with each piece of text as a chat.Delta,
// which also carries the logprobs of the tokens generated since the last
// one when the request asks for them.
func (e *Engine) GenerateDeltas(ctx context.Context, req Request, onDelta func(chat.Delta) error) (chat.Result, error) {
	s, err := e.prepare(req)
	if err != nil {
		return chat.Result{}, err
	}
	defer s.grammar.free()
	if err := e.enqueue(s); err != nil {
		return chat.Result{}, err
	}
	defer e.requests.Add(1)

	for {
		select {
		case <-ctx.Done():
			e.cancel(s)
			return chat.Result{}, ctx.Err()
		case <-s.out.notify:
		}
		d, res, done := s.out.take()
		if (d.Content != "" || len(d.Logprobs) > 0) && onDelta != nil {
			if err := onDelta(d); err != nil {
				e.cancel(s)
				return chat.Result{}, err
			}
		}
		if done {
			if res.err != nil {
				return chat.Result{}, res.err
			}
			return res.Result, nil
		}
	}
}

// prepare checks a request (chat.Request.Validate, the rules every tier
// shares), renders and tokenizes it, and checks it against the context.
func (e *Engine) prepare(req Request) (*sequence, error) {
	check := req.Validate
	if req.Prompt != "" {
		check = req.ValidateOptions
	}
	if err := check(); err != nil {
		var fe *chat.FieldError
		if errors.As(err, &fe) {
			return nil, invalidf(fe.Param, "%s", fe.Message)
		}
		return nil, invalidf("", "%v", err)
	}
	tokens, err := e.tokenize(req)
	if err != nil {
		return nil, err
	}
	if len(tokens) == 0 {
		return nil, invalidf("messages", "the prompt is empty")
	}
	room := e.cfg.ContextPerSeq - len(tokens)
	if room < 1 {
		return nil, e.promptTooLong(fmt.Sprintf("is %d tokens", len(tokens)))
	}
	maxTokens := req.MaxTokens
	switch {
	case maxTokens == 0:
		maxTokens = min(e.cfg.DefaultMaxTokens, room)
	case maxTokens > room:
		err := invalidf("messages", "the prompt is %d tokens and max_tokens %d; together they exceed the %d tokens a request may use",
			len(tokens), maxTokens, e.cfg.ContextPerSeq)
		err.Reason = ReasonContextLength
		return nil, err
	}
	sp := samplingParams(req.Request)
	stops := slices.Concat(e.render.stops, req.Stop)
	g, err := e.newGrammar(req.ResponseFormat)
	if err != nil {
		return nil, err
	}
	if g != nil {
		sp.Constraint = g
	}
	return &sequence{
		tokens:    tokens,
		maxTokens: maxTokens,
		grammar:   g,
		sampling:  sp,
		text:      newTextStream(stops),
		out:       newOutbox(),
		queuedAt:  time.Now(),
	}, nil
}

// tokenize renders and tokenizes a request's messages, or its raw prompt.
func (e *Engine) tokenize(req Request) ([]int, error) {
	limit := e.cfg.ContextPerSeq
	if req.Prompt != "" {
		// A raw prompt comes from this process (tests, benchmarks), never
		// from a client, so it may spell control tokens.
		if n := e.tokens.bound.minTokens(req.Prompt); n >= limit {
			return nil, e.promptTooLong(fmt.Sprintf("is at least %d tokens", n))
		}
		tokens, err := e.model.Tokenize(req.Prompt, true, true)
		if err != nil {
			return nil, invalidf("prompt", "tokenize: %v", err)
		}
		return tokens, nil
	}
	if len(req.Messages) == 0 {
		return nil, invalidf("messages", "no messages")
	}
	p, err := e.render.render(req.Messages)
	if err != nil {
		return nil, invalidf("messages", "%v", err)
	}
	tokens, err := e.tokens.tokenize(p, limit)
	if tl := (*tooLongError)(nil); errors.As(err, &tl) {
		return nil, e.promptTooLong(fmt.Sprintf("is at least %d tokens", tl.atLeast))
	}
	if err != nil {
		return nil, invalidf("messages", "%v", err)
	}
	return tokens, nil
}

// promptTooLong refuses a prompt that leaves no room for a completion;
// size says how long it is ("is 900 tokens").
func (e *Engine) promptTooLong(size string) *Error {
	err := invalidf("messages", "the prompt %s but a request may use at most %d (prompt and completion)", size, e.cfg.ContextPerSeq)
	err.Reason = ReasonContextLength
	return err
}

// samplingParams turns a request's sampling fields, already validated
// (chat.Request.Validate), into the sampler's. Absent fields get
// llama.cpp's usual defaults; temperature 0 is greedy; without a seed the
// sampler gets a random one.
func samplingParams(r chat.Request) sampling {
	p := sampling{
		TopK:          40,
		TopP:          0.95,
		MinP:          0.05,
		Temp:          0.8,
		RepeatLastN:   64,
		PenaltyRepeat: 1,
		Seed:          rand.Uint64(),
	}
	set := func(dst *float32, v *float32) {
		if v != nil {
			*dst = *v
		}
	}
	set(&p.Temp, r.Temperature)
	set(&p.TopP, r.TopP)
	set(&p.MinP, r.MinP)
	set(&p.PenaltyPresent, r.PresencePenalty)
	set(&p.PenaltyFreq, r.FrequencyPenalty)
	set(&p.PenaltyRepeat, r.RepeatPenalty)
	if r.TopK != nil {
		p.TopK = *r.TopK
	}
	if r.Seed != nil {
		p.Seed = uint64(*r.Seed)
	}
	p.Logprobs, p.TopLogprobs = r.Logprobs, r.TopLogprobs
	return p
}

// tokenLogprob is the logprob entry of the token s just drew, whose text
// is piece.
func (e *Engine) tokenLogprob(s *sampler, piece string) chat.TokenLogprob {
	lp, top := s.logprob()
	out := chat.TokenLogprob{Bytes: []byte(piece), Logprob: lp}
	for _, c := range top {
		out.Top = append(out.Top, chat.TopLogprob{Bytes: []byte(e.model.TokenToPiece(int(c.id))), Logprob: s.topLogprob(c)})
	}
	return out
}

// enqueue puts s in the queue, or fails when the queue is full or the engine
// is draining.
func (e *Engine) enqueue(s *sequence) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.draining {
		return &Error{Kind: ErrClosed, Message: "the engine is shutting down"}
	}
	// Queued requests fill free slots first (the loop admits them at its
	// next pass); the bounds apply to those left waiting after that.
	free := 0
	for _, slot := range e.slots {
		if slot == nil {
			free++
		}
	}
	ahead := len(e.queue) - free
	if ok, wait, retry := e.admission().judge(ahead); !ok {
		msg := fmt.Sprintf("all %d slots busy and %d requests queued", len(e.slots), ahead)
		if ahead < e.cfg.QueueSize {
			msg = fmt.Sprintf("all %d slots busy; with %d requests queued a slot would take about %s to free, past the %s limit",
				len(e.slots), ahead, wait.Round(100*time.Millisecond), e.cfg.MaxQueueWait)
		}
		return &Error{Kind: ErrOverloaded, Message: msg, RetryAfter: retry}
	}
	e.queue = append(e.queue, s)
	e.signal()
	return nil
}

// admission is the queue's policy with what the engine has measured.
// Called with e.mu held.
func (e *Engine) admission() admission {
	return admission{slots: len(e.slots), queueSize: e.cfg.QueueSize, maxWait: e.cfg.MaxQueueWait, hold: e.hold.mean}
}

// cancel abandons s: out of the queue at once, or out of its slot at the
// loop's next step.
func (e *Engine) cancel(s *sequence) {
	s.cancelled.Store(true)
	e.mu.Lock()
	if i := slices.Index(e.queue, s); i >= 0 {
		e.queue = slices.Delete(e.queue, i, i+1)
	}
	e.mu.Unlock()
	e.signal()
}

func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Drain stops taking new requests and waits until every admitted one has
// finished or ctx ends.
func (e *Engine) Drain(ctx context.Context) error {
	e.mu.Lock()
	e.draining = true
	e.mu.Unlock()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		st := e.Stats()
		if st.Busy == 0 && st.Queued == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain: %d running, %d queued: %w", st.Busy, st.Queued, ctx.Err())
		case <-t.C:
		}
	}
}

// Close stops the loop, fails whatever is still running with ErrClosed and
// frees llama.cpp's memory.
func (e *Engine) Close() {
	e.mu.Lock()
	if e.quit == nil {
		e.mu.Unlock()
		return
	}
	e.draining = true
	close(e.quit)
	e.quit = nil
	e.mu.Unlock()
	<-e.loopDone
	e.batch.Free()
	llama.FreeModel(e.model)
}
