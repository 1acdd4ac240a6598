// Package engine runs one GGUF model through llama.cpp (github.com/ollama/ollama/llama)
// and decodes many chat requests at once: continuous batching over one llama
// context, one sequence id per request, requests joining and leaving between
// decode steps.
//
// One goroutine, the loop, owns the llama context. GenerateDeltas hands it a
// sequence and waits for text; the loop never blocks on a caller, so a slow
// consumer cannot stall the others.
package engine

import (
	"cmp"
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
	"github.com/slm-mesh/slm-mesh/internal/chat/functiongemma"
	"github.com/slm-mesh/slm-mesh/internal/model"
)

// Config configures an Engine. A field left zero takes its value in
// DefaultConfig.
type Config struct {
	// ModelPath is a local GGUF file (see internal/model for URLs).
	ModelPath string
	// ModelName is the name the model is served under; default: the file
	// name without extension.
	ModelName string
	// Threads used by llama.cpp; default: one per CPU but one, at least
	// one (DefaultThreads).
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
	// GenerateDeltas fails with chat.CodeOverloaded. Default 4×Parallel; negative: none.
	QueueSize int
	// MaxQueueWait bounds how long a request may expect to wait for a slot,
	// judged from how fast slots have been freeing (see admission) and,
	// until a round of them has, from the waiting requests' tokens and the
	// time of a decode step measured at Open (see priorHold); past it
	// GenerateDeltas fails with chat.CodeOverloaded, as past QueueSize, and the error's
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

// DefaultConfig is the configuration of an Engine, but for the model: the
// inference service's flags start from it, and Open fills a field left
// zero from it.
func DefaultConfig() Config {
	return Config{
		Threads:          DefaultThreads(runtime.NumCPU()),
		Parallel:         8,
		ContextPerSeq:    2048,
		BatchSize:        512,
		PrefillChunk:     32,
		MaxQueueWait:     30 * time.Second,
		DefaultMaxTokens: 512,
		FlashAttention:   "auto",
		KVCacheType:      "f16",
		// QueueSize 0 is 4×Parallel, whatever Parallel is.
	}
}

// DefaultThreads is the llama.cpp thread count for cpus CPUs: one CPU is
// left free. llama.cpp's threads spin at every step's barriers, so when
// anything else runs (a build, the caller, the Go runtime) a thread on
// every CPU stalls the whole step: on 2 CPUs next to one busy process, 2
// threads decoded 9 to 35 times slower than 1 (docs/PERFORMANCE.md, "CPU
// contention"), for a quarter to a half more speed on a quiet machine.
// Under Nomad the job gives the task cores of its own and passes
// -threads = their count.
func DefaultThreads(cpus int) int {
	return max(1, cpus-1)
}

// setDefaults fills the fields left zero (or negative where that means
// nothing) from DefaultConfig.
func (c *Config) setDefaults() {
	d := DefaultConfig()
	positive := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	positive(&c.Threads, d.Threads)
	positive(&c.Parallel, d.Parallel)
	positive(&c.ContextPerSeq, d.ContextPerSeq)
	positive(&c.BatchSize, d.BatchSize)
	positive(&c.PrefillChunk, d.PrefillChunk)
	positive(&c.DefaultMaxTokens, d.DefaultMaxTokens)
	c.PrefillChunk = min(c.PrefillChunk, c.BatchSize)
	if c.QueueSize == 0 {
		c.QueueSize = 4 * c.Parallel
	}
	c.QueueSize = max(c.QueueSize, 0)
	c.MaxQueueWait = cmp.Or(c.MaxQueueWait, d.MaxQueueWait)
	c.FlashAttention = cmp.Or(c.FlashAttention, d.FlashAttention)
	c.KVCacheType = cmp.Or(c.KVCacheType, d.KVCacheType)
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
}

// Validate refuses settings llama.cpp would misread or reject, before a
// model is at hand (Open validates them again, and the model against them).
func (c Config) Validate() error {
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
// threads threads (0: the default): the CPUs llama.cpp leaves, at least one.
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
		threads = DefaultConfig().Threads
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
	// a slot (0 when one is free); past Config.MaxQueueWait it is refused.
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
	// tools is the model's function-calling format; nil: it has none,
	// and requests with tools are refused.
	tools *toolFormat
	// embed is set for an embedding model (one with a pooling type): it
	// serves Embed and refuses GenerateDeltas; nil for a generative one,
	// which refuses Embed.
	embed *embedder

	model   *llama.Model
	lctx    *llama.Context
	batch   *llama.Batch
	threads *threadpool // lctx's CPU threads

	mu       sync.Mutex
	queue    []*sequence   // waiting for a slot, oldest first
	slots    []*sequence   // index = llama sequence id; nil = free
	cache    []slotCache   // index = llama sequence id; what a free slot's KV cache holds
	tick     uint64        // requests that left a cache, the clock of slotCache.used
	hold     holdTime      // how long requests keep a slot
	stepTime time.Duration // a decode step with every slot generating, timed at Open: the queue's prior (priorHold)
	draining bool
	wake     chan struct{} // cap 1: something changed for the loop

	quit     chan struct{}
	loopDone chan struct{}
	plan     planner

	requests, promptTokens, cachedTokens, completionTokens, steps atomic.Uint64

	gvocab lazyVocab // the vocabulary grammars read (grammar.go)
	tvocab lazyVocab // the same with the function-calling tokens (tools.go)
}

// backendOnce initialises llama.cpp's backends once per process.
var backendOnce sync.Once

// Open validates and loads the model and starts the decode loop.
func Open(cfg Config) (*Engine, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
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
	embedding := info.PoolingType > 0
	if embedding {
		// llama.cpp encodes a non-causal batch in one pass: the longest
		// input must fit in one micro-batch. Inputs are still packed at
		// most 512 tokens at a time (embedder.pack).
		cfg.BatchSize = max(cfg.BatchSize, cfg.ContextPerSeq)
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
	seqs := cfg.Parallel
	if embedding {
		seqs = embedSeqs
	}
	params := llama.NewContextParams(cfg.ContextPerSeq*seqs, cfg.BatchSize, seqs, cfg.Threads, fa, cfg.KVCacheType)
	lctx, err := llama.NewContextWithModel(m, params)
	if err != nil {
		llama.FreeModel(m)
		return nil, fmt.Errorf("create context for %s: %w", cfg.ModelPath, err)
	}
	threads, err := attachThreadpool(lctx, seqs, cfg.Threads)
	if err != nil {
		llama.FreeModel(m)
		return nil, err
	}
	batch, err := llama.NewBatch(cfg.BatchSize, seqs, 0)
	if err != nil {
		threads.free()
		llama.FreeModel(m)
		return nil, err
	}

	var step time.Duration
	var tools *toolFormat
	var emb *embedder
	if embedding {
		emb = &embedder{width: m.NEmbd(), pack: min(DefaultConfig().BatchSize, cfg.BatchSize), turn: make(chan struct{}, 1)}
		if cfg.FlashAttention == "off" {
			// Without flash attention a packed pass computes the
			// attention of every token to every other, masked or not:
			// slower than a pass per input (docs/PERFORMANCE.md).
			emb.pack = 1
		}
	} else {
		step = measureStep(lctx, batch, min(cfg.Parallel, cfg.BatchSize))
		tools = detectTools(m, tok, info.ChatTemplate)
	}
	e := &Engine{
		cfg:      cfg,
		stepTime: step,
		log:      cfg.Logger,
		name:     name,
		created:  created,
		render:   r,
		tokens:   tok,
		tools:    tools,
		embed:    emb,
		model:    m,
		lctx:     lctx,
		batch:    batch,
		threads:  threads,
		slots:    make([]*sequence, cfg.Parallel),
		cache:    make([]slotCache, cfg.Parallel),
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	e.log.Info("model loaded", "model", name, "arch", info.Architecture, "template", r.name, "tools", tools != nil, "embedding", embedding,
		"parallel", cfg.Parallel, "ctx_per_seq", cfg.ContextPerSeq, "threads", cfg.Threads,
		"batch", cfg.BatchSize, "queue", cfg.QueueSize, "max_queue_wait", cfg.MaxQueueWait, "flash_attention", cfg.FlashAttention, "kv_cache_type", cfg.KVCacheType, "prompt_cache", !cfg.NoPromptCache, "step", step)
	go e.loop(e.quit)
	return e, nil
}

// Name is the name the model is served under.
func (e *Engine) Name() string { return e.name }

// Stats returns a snapshot of the engine's state.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	busy := e.embedsRunning()
	for _, s := range e.slots {
		if s != nil {
			busy++
		}
	}
	queued := len(e.queue)
	_, wait, _ := e.admission().judge()
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

// Request is what GenerateDeltas takes: a chat request, or (Prompt set) raw text
// that is tokenized as it is, control tokens included, for completion-style
// use and tests. A client's text is only ever in Messages.
type Request struct {
	chat.Request
	// Prompt, when not empty, replaces the rendered messages.
	Prompt string
}

// GenerateDeltas runs one request to completion. onDelta receives each
// new piece of text as it is decoded (never a split UTF-8 character, never
// part of a stop string), with the logprobs of the tokens generated since
// the last one when the request asks for them; an error from onDelta
// cancels the generation. When ctx ends the sequence is freed at the next
// step and ctx's error is returned. When ctx's span is recorded, the
// request's phases in the engine become spans under it (traceRequest).
func (e *Engine) GenerateDeltas(ctx context.Context, req Request, onDelta func(chat.Delta) error) (res chat.Result, err error) {
	s, err := e.prepare(req)
	if err != nil {
		return chat.Result{}, err
	}
	defer s.grammar.free()
	if err := e.enqueue(s); err != nil {
		return chat.Result{}, err
	}
	defer e.requests.Add(1)
	defer func() { e.traceRequest(ctx, s, res, err, time.Now()) }()

	var calls *callParser
	if s.parse {
		calls = &callParser{e: e}
	}
	for {
		select {
		case <-ctx.Done():
			e.cancel(s)
			return chat.Result{}, ctx.Err()
		case <-s.out.notify:
		}
		d, o, done := s.out.take()
		if calls != nil {
			d = calls.add(d)
			if done && o.err == nil {
				d = calls.finish(d)
				if calls.calls > 0 && o.FinishReason == chat.FinishStop {
					o.FinishReason = chat.FinishToolCalls
				}
			}
		}
		if !d.Empty() && onDelta != nil {
			if err := onDelta(d); err != nil {
				e.cancel(s)
				return chat.Result{}, err
			}
		}
		if done {
			if o.err != nil {
				return chat.Result{}, o.err
			}
			return o.Result, nil
		}
	}
}

// prepare checks a request (chat.Request.Validate, the rules every tier
// shares), renders and tokenizes it, and checks it against the context.
func (e *Engine) prepare(req Request) (*sequence, error) {
	if e.embed != nil {
		return nil, chat.Invalidf("model", "model %s is an embedding model and does not support completions; use /v1/embeddings", e.name)
	}
	check := req.Validate
	if req.Prompt != "" {
		check = req.ValidateOptions
	}
	if err := check(); err != nil {
		return nil, err
	}
	var plan toolPlan
	var rendered prompt
	if req.Prompt == "" && req.UsesTools() {
		p, pl, err := e.planTools(req.Request)
		if err != nil {
			return nil, err
		}
		rendered, plan = toPrompt(p), pl
	}
	var tokens []int
	var err error
	if rendered != nil {
		tokens, err = e.tokenizePrompt(rendered)
	} else {
		tokens, err = e.tokenize(req)
	}
	if ce := (*chat.Error)(nil); errors.As(err, &ce) && ce.Reason == chat.ReasonContextLength {
		ce.Param = promptParam(req)
	}
	if err != nil {
		return nil, err
	}
	if len(tokens) == 0 {
		return nil, chat.Invalidf(promptParam(req), "the prompt is empty")
	}
	room := e.cfg.ContextPerSeq - len(tokens)
	if room < 1 {
		err := e.promptTooLong(fmt.Sprintf("is %d tokens", len(tokens)))
		err.Param = promptParam(req)
		return nil, err
	}
	maxTokens := req.MaxTokens
	switch {
	case maxTokens == 0:
		maxTokens = min(e.cfg.DefaultMaxTokens, room)
	case maxTokens > room:
		err := chat.Invalidf(promptParam(req), "the prompt is %d tokens and %s %d; together they exceed the %d tokens a request may use",
			len(tokens), req.MaxTokensName(), maxTokens, e.cfg.ContextPerSeq)
		err.Reason = chat.ReasonContextLength
		return nil, err
	}
	sp := samplingParams(req.Request)
	stops := slices.Concat(e.render.stops, req.Stop)
	if rendered != nil {
		// The model asks for a function's result by writing
		// <start_function_response>; its reply ends there.
		stops = slices.Concat(stops, functiongemma.StopStrings())
	}
	// A grammar for calls replaces response_format's: the reply is
	// calls. Without one, response_format applies, and its grammar never
	// admits a control token, so it also keeps tool_choice none from
	// calling.
	var g *grammar
	if plan.callGrammar {
		g, err = e.toolGrammar(req.Request)
	} else {
		g, err = e.newGrammar(req.ResponseFormat)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case g != nil:
		sp.Constraint = g
	case plan.constraint != nil:
		sp.Constraint = plan.constraint
	}
	var forced []int
	if plan.callGrammar && !sp.Logprobs { // a forced token has no distribution to report
		forced = e.callPrefix(req.Request, g, maxTokens-1)
	}
	return &sequence{
		tokens:    slices.Concat(tokens, forced),
		forced:    len(forced),
		maxTokens: maxTokens,
		grammar:   g,
		parse:     plan.parse,
		oneCall:   plan.callGrammar && !req.Parallel() && !sp.Logprobs,
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
			return nil, chat.Invalidf("prompt", "tokenize: %v", err)
		}
		return tokens, nil
	}
	if raw := req.RawPrompt; raw != nil {
		// A client's completion prompt: plain text, with the model's BOS
		// as the template would begin it, never a control token.
		if n := e.tokens.bound.minTokens(*raw); n >= limit {
			return nil, e.promptTooLong(fmt.Sprintf("is at least %d tokens", n))
		}
		tokens, err := e.model.Tokenize(*raw, true, false)
		if err != nil {
			return nil, chat.Invalidf("prompt", "tokenize: %v", err)
		}
		return tokens, nil
	}
	if len(req.Messages) == 0 {
		return nil, chat.Invalidf("messages", "no messages")
	}
	p, err := e.render.render(req.Messages)
	if err != nil {
		return nil, chat.Invalidf("messages", "%v", err)
	}
	return e.tokenizePrompt(p)
}

// tokenizePrompt tokenizes a rendered prompt (promptTokenizer: control
// tokens only where the template wrote them).
func (e *Engine) tokenizePrompt(p prompt) ([]int, error) {
	tokens, err := e.tokens.tokenize(p, e.cfg.ContextPerSeq)
	if tl := (*tooLongError)(nil); errors.As(err, &tl) {
		return nil, e.promptTooLong(fmt.Sprintf("is at least %d tokens", tl.atLeast))
	}
	if err != nil {
		return nil, chat.Invalidf("messages", "%v", err)
	}
	return tokens, nil
}

// promptParam is the request field that holds the prompt: "prompt" for
// a completion, "messages" for a chat.
func promptParam(req Request) string {
	if req.RawPrompt != nil {
		return "prompt"
	}
	return "messages"
}

// promptTooLong refuses a prompt that leaves no room for a completion;
// size says how long it is ("is 900 tokens").
func (e *Engine) promptTooLong(size string) *chat.Error {
	err := chat.Invalidf("messages", "the prompt %s but a request may use at most %d (prompt and completion)", size, e.cfg.ContextPerSeq)
	err.Reason = chat.ReasonContextLength
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

// closing is the refusal of a request the engine will not serve because it
// is draining or closed: unavailable, so that the caller tries another
// instance.
func closing() *chat.Error {
	return &chat.Error{Code: chat.CodeUnavailable, Message: "the engine is shutting down"}
}

// enqueue puts s in the queue, or fails when the queue is full or the engine
// is draining.
func (e *Engine) enqueue(s *sequence) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.draining {
		return closing()
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
	if ok, wait, retry := e.admission().judge(); !ok {
		msg := fmt.Sprintf("all %d slots busy and %d requests queued", len(e.slots), ahead)
		if ahead < e.cfg.QueueSize {
			msg = fmt.Sprintf("all %d slots busy; with %d requests queued a slot would take about %s to free, past the %s limit",
				len(e.slots), ahead, wait.Round(100*time.Millisecond), e.cfg.MaxQueueWait)
		}
		return &chat.Error{Code: chat.CodeOverloaded, Message: msg, RetryAfter: retry}
	}
	e.queue = append(e.queue, s)
	e.signal()
	return nil
}

// admission is the queue's policy with what the engine has measured.
// Called with e.mu held.
func (e *Engine) admission() admission {
	a := admission{slots: len(e.slots), queueSize: e.cfg.QueueSize, maxWait: e.cfg.MaxQueueWait,
		known: e.hold.n > 0 || e.stepTime > 0}
	now := time.Now()
	for _, s := range e.slots {
		if s != nil {
			a.busy = append(a.busy, slotUse{hold: e.expectedHold(s), held: now.Sub(s.admittedAt)})
		}
	}
	for _, s := range e.queue {
		a.queued = append(a.queued, e.expectedHold(s))
	}
	return a
}

// expectedHold is how long s is expected to keep its slot: the measured
// mean, or before a round of slots has been measured, at least its prior
// (holdEstimate). Called with e.mu held.
func (e *Engine) expectedHold(s *sequence) time.Duration {
	return holdEstimate(e.hold, len(e.slots), priorHold(e.stepTime, len(s.tokens)+s.maxTokens))
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

// Close stops the loop, fails whatever is still running as unavailable
// (closing) and frees llama.cpp's memory.
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
	if e.embed != nil {
		// Wait for a running pass, the other user of the context.
		e.embed.turn <- struct{}{}
		e.embed.closed = true
		defer func() { <-e.embed.turn }()
	}
	e.batch.Free()
	e.threads.free()
	e.gvocab.close()
	e.tvocab.close()
	llama.FreeModel(e.model)
}
