package engine

import (
	"errors"
	"math"
	"slices"

	"github.com/ollama/ollama/llama"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/chat/functiongemma"
)

// toolFormat is how a model calls tools: FunctionGemma's format
// (internal/chat/functiongemma), whose control tokens have these ids.
type toolFormat struct {
	ids map[string]int // each of functiongemma.Tokens() → its token
}

// detectTools returns the model's function-calling format, or nil when it
// has none: functiongemma.Detect on its chat template and on the format's
// tags that its vocabulary holds as control tokens (one token each, which
// plain text never tokenizes to, so that a client cannot forge one, and
// which detokenizes to the tag, so that the Parser sees it).
func detectTools(m *llama.Model, tok *promptTokenizer, chatTemplate string) *toolFormat {
	ids := map[string]int{}
	spelt := []string{}
	for _, tag := range functiongemma.Tokens() {
		toks, err := m.Tokenize(tag, false, true)
		if err != nil || len(toks) != 1 || m.TokenToPiece(toks[0]) != tag {
			continue
		}
		if control, err := tok.isControl(toks[0], tag); err != nil || !control {
			continue
		}
		ids[tag] = toks[0]
		spelt = append(spelt, tag)
	}
	if !functiongemma.Detect(chatTemplate, spelt) {
		return nil
	}
	return &toolFormat{ids: ids}
}

// toolPlan is what a request's tools ask of its sequence.
type toolPlan struct {
	// parse: the output goes through a functiongemma.Parser, which turns
	// calls into chat.ToolCalls (tool_choice auto, required, a function).
	parse bool
	// callGrammar: the model must call (required, a function), under
	// toolGrammar.
	callGrammar bool
	// constraint, without a grammar, limits what may be drawn: the ban of
	// <start_function_call> for none.
	constraint constraint
}

// planTools renders a request that uses tools (chat.Request.UsesTools)
// and says how to generate it: the prompt, FunctionGemma's, with the
// tools declared unless tool_choice is none; and what toolPlan holds. A
// model without a function-calling format refuses the request.
func (e *Engine) planTools(req chat.Request) (functiongemma.Prompt, toolPlan, error) {
	if e.tools == nil {
		return nil, toolPlan{}, chat.Invalidf("tools", "model %s does not support tools", e.name)
	}
	mode := req.ToolMode()
	declared := req.Tools
	if mode == chat.ToolChoiceNone {
		declared = nil
	}
	p, err := functiongemma.Render(req.Messages, declared)
	if err != nil {
		var ce *chat.Error
		if errors.As(err, &ce) {
			return nil, toolPlan{}, ce
		}
		return nil, toolPlan{}, chat.Invalidf("messages", "%v", err)
	}
	switch mode {
	case chat.ToolChoiceNone:
		return p, toolPlan{constraint: banned{e.tools.ids[functiongemma.StartCall]}}, nil
	case chat.ToolChoiceRequired, chat.ToolChoiceFunction:
		return p, toolPlan{parse: true, callGrammar: true}, nil
	}
	return p, toolPlan{parse: true}, nil
}

// toolGrammar returns the grammar that makes the model call the tools
// tool_choice allows (all with required, the named one otherwise), once
// or, with parallel_tool_calls, more times.
func (e *Engine) toolGrammar(req chat.Request) (*grammar, error) {
	tools := req.Tools
	if req.ToolChoice != nil && req.ToolChoice.Mode == chat.ToolChoiceFunction {
		i := slices.IndexFunc(tools, func(t chat.Tool) bool { return t.Function.Name == req.ToolChoice.Name })
		if i < 0 {
			return nil, chat.Invalidf("tool_choice", "Invalid 'tool_choice': function %q is not among the tools.", req.ToolChoice.Name)
		}
		tools = tools[i : i+1]
	}
	ids := e.tools.ids
	gbnf, err := functiongemma.Grammar(tools, req.Parallel(), functiongemma.GrammarTokens{
		StartCall: ids[functiongemma.StartCall], EndCall: ids[functiongemma.EndCall], Escape: ids[functiongemma.Escape],
	})
	if err != nil {
		return nil, chat.Invalidf("tools", "Invalid 'tools': %v", err)
	}
	g := compileGrammar(gbnf, e.toolVocab())
	if g == nil {
		return nil, chat.Invalidf("tools", "Invalid 'tools': this server cannot enforce the functions' parameters as a grammar.")
	}
	return g, nil
}

// callPrefix returns the tokens that a reply under g, the grammar of
// forced calls (toolGrammar), must begin with, at most limit of them, and
// advances g past them: those of <start_function_call>, "call:" and, when
// one function may be called, its name and the "{" of its arguments, but
// the last (below). The
// engine decodes them with the prompt, in one pass, instead of drawing
// each in a step of its own (jump-forward decoding, as SGLang names it).
// The text is tokenized as the tokenizer would, and its last token is
// left to be drawn, so that it may merge with what follows as it would in
// the model's training text (the prefix ends where the tokenizer put a
// boundary, not where the fixed text happens to end). The grammar may
// read a token otherwise: the prefix stops before the first one g
// refuses.
func (e *Engine) callPrefix(req chat.Request, g *grammar, limit int) []int {
	text := "call:"
	if req.ToolChoice != nil && req.ToolChoice.Mode == chat.ToolChoiceFunction {
		text += req.ToolChoice.Name + "{"
	} else if len(req.Tools) == 1 {
		text += req.Tools[0].Function.Name + "{"
	}
	toks, err := e.model.Tokenize(text, false, false)
	if err != nil {
		toks = nil
	}
	if len(toks) > 0 {
		toks = toks[:len(toks)-1] // drawn
	}
	var out []int
	for _, tok := range slices.Concat([]int{e.tools.ids[functiongemma.StartCall]}, toks) {
		if len(out) == limit || e.model.TokenIsEog(tok) || !g.allows(tok) {
			break
		}
		g.accept(tok)
		out = append(out, tok)
	}
	return out
}

// controlPiece is the piece the format's control tokens have in a tool
// grammar's vocabulary: the grammar names them by id, and none of its
// character classes admits U+0001, so no text rule can take one.
const controlPiece = "\x01"

// toolVocab is the grammar vocabulary (grammarVocab) with the format's
// control tokens in it, as controlPiece, outside its trie; built once, on
// first use.
func (e *Engine) toolVocab() *grammarVocab {
	return e.tvocab.get(func() *grammarVocab {
		base := e.grammarVocab()
		v := *base
		v.pieces = slices.Clone(base.pieces)
		v.unsorted = nil
		for _, id := range e.tools.ids {
			v.pieces[id] = controlPiece
			v.unsorted = append(v.unsorted, int32(id))
		}
		v.c = newCVocab(v.pieces, v.eog)
		v.cache = &grammarCache{}
		return &v
	})
}

// banned is a constraint that forbids some tokens: the start of a call,
// for tool_choice none.
type banned []int

var _ constraint = banned(nil)

func (b banned) allows(tok int) bool { return !slices.Contains(b, tok) }

func (b banned) mask(logits []float32, _ int) (done, any bool) {
	for _, tok := range b {
		if tok >= 0 && tok < len(logits) {
			logits[tok] = float32(math.Inf(-1))
		}
	}
	for _, l := range logits {
		if l > float32(math.Inf(-1)) {
			return true, true
		}
	}
	return true, false
}

func (b banned) filter(c candidates) candidates {
	return slices.DeleteFunc(c, func(x candidate) bool { return slices.Contains(b, int(x.id)) })
}

func (banned) accept(int) {}

// toPrompt turns a rendered FunctionGemma prompt into the engine's parts.
func toPrompt(p functiongemma.Prompt) prompt {
	var out prompt
	for _, part := range p {
		out = out.add(part.Text, part.Content)
	}
	return out
}

// callParser turns a sequence's text into text and tool calls as
// GenerateDeltas passes them on.
type callParser struct {
	p     functiongemma.Parser
	calls int // calls passed on
	e     *Engine
}

// add parses d's text; d keeps its logprobs.
func (c *callParser) add(d chat.Delta) chat.Delta {
	out, err := c.p.Add(d.Content)
	c.note(err)
	d.Content, d.ToolCalls = out.Content, out.ToolCalls
	c.calls += len(out.ToolCalls)
	return d
}

// finish adds to d what the parser held back at the end.
func (c *callParser) finish(d chat.Delta) chat.Delta {
	out, err := c.p.Finish()
	c.note(err)
	d.Content += out.Content
	d.ToolCalls = append(d.ToolCalls, out.ToolCalls...)
	c.calls += len(out.ToolCalls)
	return d
}

// note logs a call the parser dropped: a model's malformed call is not
// the client's fault, and the rest of the reply still stands.
func (c *callParser) note(err error) {
	if err != nil {
		c.e.log.Warn("dropped a malformed function call", "error", err)
	}
}
