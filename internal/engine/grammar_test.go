package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ollama/ollama/llama"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/chat/functiongemma"
)

// personSchema bounds every part of its output (string lengths, array
// sizes, integer range), so that a model whose text is noise still ends
// within max_tokens: the grammar alone must make the output valid.
const personSchema = `{
	"type": "object",
	"properties": {
		"name": {"type": "string", "minLength": 1, "maxLength": 12},
		"age": {"type": "integer", "minimum": 0, "maximum": 150},
		"pet": {"enum": ["cat", "dog", "none"]},
		"tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
		"ok": {"type": "boolean"}
	},
	"required": ["name", "age", "pet", "ok"],
	"additionalProperties": false
}`

func jsonSchemaFormat(schema string) *chat.ResponseFormat {
	return &chat.ResponseFormat{Type: chat.FormatJSONSchema, Name: "t", Schema: json.RawMessage(schema), Strict: true}
}

// TestStructuredOutputFollowsSchema draws 50 seeded samples per model
// under a JSON schema: every one must parse, validate and end by itself
// ("stop"). On the generated gemma3 model, whose weights are random, the
// grammar is all that shapes the output.
func TestStructuredOutputFollowsSchema(t *testing.T) {
	t.Parallel()
	for _, m := range []struct {
		name string
		open func(testing.TB) *Engine
		// objectsEnd: some free-form objects end within max_tokens.
		// stories260K's never do: it tells a story inside a string.
		objectsEnd bool
	}{
		{"stories260K", func(t testing.TB) *Engine { return openStories(t, Config{Parallel: 4}) }, false},
		{"gemma3-random", func(t testing.TB) *Engine { return openTinyGemma(t, Config{Parallel: 4, ContextPerSeq: 512}) }, true},
	} {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			e := m.open(t)
			for _, f := range []struct {
				name   string
				format *chat.ResponseFormat
				schema string
			}{
				{"json_schema", jsonSchemaFormat(personSchema), personSchema},
				{"json_object", &chat.ResponseFormat{Type: chat.FormatJSONObject}, `{"type":"object"}`},
			} {
				var schema map[string]any
				if err := json.Unmarshal([]byte(f.schema), &schema); err != nil {
					t.Fatal(err)
				}
				n, stopped := 50, 0
				if f.format.Type == chat.FormatJSONObject {
					// Any object may hold strings without bound, which
					// a model ends only when it wants to: fewer
					// samples, and those max_tokens cuts are skipped.
					n = 5
				}
				for seed := range n {
					req := Request{Request: chat.Request{
						Messages:       []chat.Message{{Role: chat.RoleUser, Content: "Describe a person as JSON."}},
						MaxTokens:      300,
						Temperature:    f32(1),
						Seed:           i64(int64(seed)),
						ResponseFormat: f.format,
					}}
					text, res := generate(t, e, req)
					if res.FinishReason == chat.FinishLength && f.format.Type == chat.FormatJSONObject {
						continue
					}
					stopped++
					if res.FinishReason != chat.FinishStop {
						t.Fatalf("%s seed %d: finish %q after %d tokens, want stop: %q", f.name, seed, res.FinishReason, res.CompletionTokens, text)
					}
					var v any
					if err := json.Unmarshal([]byte(text), &v); err != nil {
						t.Fatalf("%s seed %d: %q is not JSON: %v", f.name, seed, text, err)
					}
					if err := validate(schema, v, "$"); err != nil {
						t.Fatalf("%s seed %d: %q: %v", f.name, seed, text, err)
					}
				}
				if stopped == 0 && (m.objectsEnd || f.format.Type != chat.FormatJSONObject) {
					t.Errorf("%s: none of %d samples ended within max_tokens", f.name, n)
				}
			}
		})
	}
}

// TestGrammarEndsGeneration checks that a grammar with one possible output
// ends the generation with "stop" once that output is complete, and that
// max_tokens still cuts it short with "length".
func TestGrammarEndsGeneration(t *testing.T) {
	t.Parallel()
	e := openStories(t, Config{})
	schema := `{"type":"object","properties":{"a":{"const":1}},"required":["a"],"additionalProperties":false}`
	req := Request{Request: chat.Request{
		Messages:       []chat.Message{{Role: chat.RoleUser, Content: "Once"}},
		MaxTokens:      200,
		Temperature:    f32(0),
		ResponseFormat: jsonSchemaFormat(schema),
	}}
	text, res := generate(t, e, req)
	if compact := strings.Join(strings.Fields(text), ""); compact != `{"a":1}` || res.FinishReason != chat.FinishStop {
		t.Fatalf("got %q, finish %q; want {\"a\":1} and stop", text, res.FinishReason)
	}

	req.MaxTokens = 2
	text, res = generate(t, e, req)
	if compact := strings.Join(strings.Fields(text), ""); res.FinishReason != chat.FinishLength || res.CompletionTokens != 2 || !strings.HasPrefix(`{"a":1}`, compact) {
		t.Fatalf("max_tokens 2: got %q, finish %q, %d tokens; want a prefix of the object and length", text, res.FinishReason, res.CompletionTokens)
	}
}

// TestUnsupportedSchemaRefused checks that a schema the converter cannot
// handle is refused before it is queued, naming response_format.
func TestUnsupportedSchemaRefused(t *testing.T) {
	t.Parallel()
	e := openStories(t, Config{})
	for _, schema := range []string{
		`{"$ref":"#/definitions/missing"}`,
		`{"type":"string","pattern":"[a-"}`,
		`{"type":"object","properties":{"a":{"$ref":"#/$defs/b"}}}`,
	} {
		req := userMsg("Once", 8)
		req.ResponseFormat = jsonSchemaFormat(schema)
		_, err := e.Generate(context.Background(), req, nil)
		var ee *chat.Error
		if !errors.As(err, &ee) || chat.Code(err) != chat.CodeInvalidArgument || ee.Param != "response_format" {
			t.Errorf("schema %s: err = %v, want invalid_argument naming response_format", schema, err)
		}
	}
}

// TestLogprobsGreedy checks logprobs under greedy decoding: the drawn
// token is the most likely, so exp(logprob) is the largest probability
// and equals the top list's first; the list is sorted, within (0, 1], sums
// to at most 1, and the tokens' bytes spell the text.
func TestLogprobsGreedy(t *testing.T) {
	t.Parallel()
	for _, m := range []struct {
		name string
		open func(testing.TB) *Engine
	}{
		{"stories260K", func(t testing.TB) *Engine { return openStories(t, Config{}) }},
		{"gemma3-random", func(t testing.TB) *Engine { return openTinyGemma(t, Config{}) }},
	} {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			e := m.open(t)
			req := userMsg("Once upon a time", 24)
			req.Logprobs, req.TopLogprobs = true, 5
			var text strings.Builder
			var lps []chat.TokenLogprob
			res, err := e.GenerateDeltas(context.Background(), req, func(d chat.Delta) error {
				text.WriteString(d.Content)
				lps = append(lps, d.Logprobs...)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(lps) != res.CompletionTokens {
				t.Fatalf("%d logprobs for %d tokens", len(lps), res.CompletionTokens)
			}
			var spelt []byte
			for i, lp := range lps {
				spelt = append(spelt, lp.Bytes...)
				if len(lp.Top) != 5 {
					t.Fatalf("token %d: %d alternatives, want 5", i, len(lp.Top))
				}
				if lp.Logprob > 0 || math.Abs(lp.Logprob-lp.Top[0].Logprob) > 1e-5 {
					t.Errorf("token %d %q: logprob %v, the most likely has %v", i, lp.Bytes, lp.Logprob, lp.Top[0].Logprob)
				}
				sum := 0.0
				for j, top := range lp.Top {
					sum += math.Exp(top.Logprob)
					if j > 0 && top.Logprob > lp.Top[j-1].Logprob {
						t.Errorf("token %d: alternatives not sorted: %v", i, lp.Top)
					}
					if string(top.Bytes) == string(lp.Bytes) && top.Logprob != lp.Logprob {
						t.Errorf("token %d %q: logprob %v, as an alternative %v", i, lp.Bytes, lp.Logprob, top.Logprob)
					}
				}
				if sum > 1+1e-6 {
					t.Errorf("token %d: alternatives' probabilities sum to %v", i, sum)
				}
			}
			if res.FinishReason == chat.FinishLength && string(spelt) != text.String() {
				t.Errorf("tokens spell %q, text is %q", spelt, text.String())
			}
		})
	}
}

// TestLogprobsStopString checks that a stop string's tokens, whose text the
// response leaves out, are left out of logprobs too, and that a delta's
// entries never run ahead of its text: the entries are the unstopped
// generation's first n, n the fewest whose text covers the content.
func TestLogprobsStopString(t *testing.T) {
	t.Parallel()
	e := openStories(t, Config{Parallel: 1})
	run := func(stop ...string) (string, []chat.TokenLogprob) {
		t.Helper()
		req := userMsg("", 60)
		req.Logprobs, req.Stop = true, stop
		var text, spelt strings.Builder
		var lps []chat.TokenLogprob
		var deltas []chat.Delta
		if _, err := e.GenerateDeltas(context.Background(), req, func(d chat.Delta) error {
			deltas = append(deltas, d)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for i, d := range deltas {
			text.WriteString(d.Content)
			for _, lp := range d.Logprobs {
				spelt.Write(lp.Bytes)
			}
			lps = append(lps, d.Logprobs...)
			if i < len(deltas)-1 && !strings.HasPrefix(text.String(), spelt.String()) {
				t.Fatalf("delta %d: logprobs spell %q ahead of the text %q", i, spelt.String(), text.String())
			}
		}
		return text.String(), lps
	}
	_, all := run()
	// "." ends a token; "ily" begins inside one (" Lily").
	for _, stop := range []string{".", "ily", "Lily"} {
		t.Run(stop, func(t *testing.T) {
			text, lps := run(stop)
			if len(lps) == 0 || len(lps) > len(all) {
				t.Fatalf("%d logprobs; %d without the stop string", len(lps), len(all))
			}
			var spelt []byte
			for i, lp := range lps {
				if string(lp.Bytes) != string(all[i].Bytes) || lp.Logprob != all[i].Logprob {
					t.Fatalf("token %d: %q %v, without the stop string %q %v", i, lp.Bytes, lp.Logprob, all[i].Bytes, all[i].Logprob)
				}
				spelt = append(spelt, lp.Bytes...)
			}
			last := len(lps[len(lps)-1].Bytes)
			if !strings.HasPrefix(string(spelt), text) || len(spelt)-last >= len(text) {
				t.Fatalf("logprobs spell %q for the text %q: want the fewest tokens that cover it", spelt, text)
			}
		})
	}
}

// TestLogprobsDistribution checks the figures against a distribution
// computed here, with penalties (which logprobs include) and a
// temperature and top-k (which they do not).
func TestLogprobsDistribution(t *testing.T) {
	t.Parallel()
	logits := []float32{1, 3, 2, -1}
	s := newSampler(sampling{Temp: 0.5, TopK: 2, TopP: 1, RepeatLastN: 4, PenaltyRepeat: 1, PenaltyPresent: 1, Logprobs: true, TopLogprobs: 3})
	s.accept(1) // token 1 is penalised to 2
	tok := s.sample(slices.Clone(logits))
	want := []float64{1, 2, 2, -1}
	lse := 0.0
	for _, l := range want {
		lse += math.Exp(l)
	}
	lse = math.Log(lse)
	lp, top := s.logprob()
	if math.Abs(lp-(want[tok]-lse)) > 1e-6 {
		t.Errorf("drawn %d: logprob %v, want %v", tok, lp, want[tok]-lse)
	}
	if len(top) != 3 || top[0].id != 1 || top[1].id != 2 || top[2].id != 0 {
		t.Fatalf("top = %v, want tokens 1, 2, 0 (ties by id)", top)
	}
	for _, c := range top {
		if got := s.topLogprob(c); math.Abs(got-(want[c.id]-lse)) > 1e-6 {
			t.Errorf("token %d: %v, want %v", c.id, got, want[c.id]-lse)
		}
	}
	// −Inf everywhere is no distribution: reported as minLogprob, never NaN.
	inf := float32(math.Inf(-1))
	s = newSampler(sampling{Temp: 0, PenaltyRepeat: 1, Logprobs: true, TopLogprobs: 1})
	s.sample([]float32{inf, inf})
	if lp, top := s.logprob(); lp != minLogprob || s.topLogprob(top[0]) != minLogprob {
		t.Errorf("all −Inf: logprob %v, top %v", lp, s.topLogprob(top[0]))
	}
}

// validate checks v against the subset of JSON Schema the tests use.
func validate(schema map[string]any, v any, path string) error {
	if enum, ok := schema["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return e == v }) {
		return fmt.Errorf("%s: %v not in %v", path, v, enum)
	}
	switch schema["type"] {
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %T, want an object", path, v)
		}
		props, _ := schema["properties"].(map[string]any)
		for _, r := range asSlice(schema["required"]) {
			if _, ok := obj[r.(string)]; !ok {
				return fmt.Errorf("%s: %q missing", path, r)
			}
		}
		for k, x := range obj {
			sub, ok := props[k].(map[string]any)
			if !ok {
				if schema["additionalProperties"] == false {
					return fmt.Errorf("%s: %q not allowed", path, k)
				}
				continue
			}
			if err := validate(sub, x, path+"."+k); err != nil {
				return err
			}
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: %T, want an array", path, v)
		}
		if maxN, ok := schema["maxItems"].(float64); ok && float64(len(arr)) > maxN {
			return fmt.Errorf("%s: %d items, at most %v", path, len(arr), maxN)
		}
		items, _ := schema["items"].(map[string]any)
		for i, x := range arr {
			if err := validate(items, x, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case "string":
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: %T, want a string", path, v)
		}
		n := float64(len([]rune(s)))
		if lo, ok := schema["minLength"].(float64); ok && n < lo {
			return fmt.Errorf("%s: %q shorter than %v", path, s, lo)
		}
		if hi, ok := schema["maxLength"].(float64); ok && n > hi {
			return fmt.Errorf("%s: %q longer than %v", path, s, hi)
		}
	case "integer":
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) {
			return fmt.Errorf("%s: %v, want an integer", path, v)
		}
		if lo, ok := schema["minimum"].(float64); ok && f < lo {
			return fmt.Errorf("%s: %v below %v", path, f, lo)
		}
		if hi, ok := schema["maximum"].(float64); ok && f > hi {
			return fmt.Errorf("%s: %v above %v", path, f, hi)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: %T, want a boolean", path, v)
		}
	}
	return nil
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// TestTrieMaskMatchesEveryToken walks grammars through random outputs
// and checks, at every step, that the mask that checks the prefix trie,
// and the one that checks every token, leave exactly the logits that the
// llama package's own Grammar, checking every token, leaves: for JSON
// schemas on gemma3's vocabulary, and for the tool calls' grammar, which
// names the format's control tokens by id.
func TestTrieMaskMatchesEveryToken(t *testing.T) {
	t.Parallel()
	gemma := openTinyGemma(t, Config{})
	fg := openFunctionGemma(t, Config{})
	schemaGrammar := func(schema string) string { return string(llama.SchemaToGrammar([]byte(schema))) }
	ids := fg.tools.ids
	toolGBNF, err := functiongemma.Grammar(forecastTools, true, functiongemma.GrammarTokens{
		StartCall: ids[functiongemma.StartCall], EndCall: ids[functiongemma.EndCall], Escape: ids[functiongemma.Escape],
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		e     *Engine
		gbnf  string
		vocab *grammarVocab
	}{
		{"json_schema", gemma, schemaGrammar(personSchema), gemma.grammarVocab()},
		{"json_object", gemma, schemaGrammar(anyObjectSchema), gemma.grammarVocab()},
		{"tool calls", fg, toolGBNF, fg.toolVocab()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.vocab
			vocabIDs := make([]uint32, len(v.pieces))
			for i := range vocabIDs {
				vocabIDs[i] = uint32(i)
			}
			n := tc.e.model.NumVocab()
			rng := rand.New(rand.NewPCG(1, 2))
			steps, probed := 0, false
			cheap, gaveUp := 0, 0 // steps a mask limited to cheapMask did, and gave up
			for walk := 0; walk < 8 && steps < 400; walk++ {
				g := compileGrammar(tc.gbnf, v)
				ref := llama.NewGrammar(tc.gbnf, vocabIDs, v.pieces, v.eog)
				if g == nil || ref == nil {
					t.Fatal("the grammar does not parse")
				}
				if g.trie == nil || len(g.trie.below) == 0 {
					t.Fatal("the grammar has no trie, or a trie without probes")
				}
				for range 80 {
					steps++
					logits := make([]float32, n)
					for i := range logits {
						logits[i] = float32(rng.NormFloat64())
					}
					logits[rng.IntN(n)] = float32(math.Inf(-1))
					logits[rng.IntN(n)] = float32(math.NaN())
					each, limited, orig := slices.Clone(logits), slices.Clone(logits), slices.Clone(logits)
					want := make([]llama.TokenData, n)
					for i, l := range logits {
						want[i] = llama.TokenData{ID: int32(i), Logit: l}
						if !(l > float32(math.Inf(-1))) {
							want[i].Logit = float32(math.Inf(-1))
						}
					}
					ref.Apply(want)
					_, anyTrie := g.mask(logits, 0)
					anyEach := g.maskEach(each)
					done, anyLimited := g.mask(limited, cheapMask)
					if done {
						cheap++
						if anyLimited != anyTrie {
							t.Fatalf("walk %d, step %d: the limited mask says %v, the whole one %v", walk, steps, anyLimited, anyTrie)
						}
					} else {
						gaveUp++
					}
					var allowed []int
					for i, w := range want {
						if math.Float32bits(logits[i]) != math.Float32bits(w.Logit) || math.Float32bits(each[i]) != math.Float32bits(w.Logit) {
							t.Fatalf("walk %d, step %d: token %d (%q): trie mask %v, every token's %v, the llama package's %v",
								walk, steps, i, tc.e.model.TokenToPiece(i), logits[i], each[i], w.Logit)
						}
						wantLimited := orig[i] // as it was when it gave up
						if done {
							wantLimited = w.Logit
						}
						if math.Float32bits(limited[i]) != math.Float32bits(wantLimited) {
							t.Fatalf("walk %d, step %d: token %d: the limited mask (done %v) left %v, want %v",
								walk, steps, i, done, limited[i], wantLimited)
						}
						if !math.IsInf(float64(w.Logit), -1) {
							allowed = append(allowed, i)
						}
					}
					if anyTrie != (len(allowed) > 0) || anyEach != anyTrie {
						t.Fatalf("walk %d, step %d: trie mask says %v, every token's %v; %d allowed", walk, steps, anyTrie, anyEach, len(allowed))
					}
					if len(allowed) == 0 {
						break
					}
					probed = probed || len(allowed) < n/2
					tok := allowed[rng.IntN(len(allowed))]
					if g.isEOG[tok] {
						break
					}
					g.accept(tok)
					ref.Accept(int32(tok))
				}
				g.free()
				ref.Free()
			}
			if !probed {
				t.Fatal("no step allowed fewer than half the tokens")
			}
			if cheap == 0 || gaveUp == 0 {
				t.Fatalf("the mask limited to %d checks was done at %d steps and gave up at %d: want some of each", cheapMask, cheap, gaveUp)
			}
		})
	}
}

// TestGrammarCache checks the cache of built grammars: each copy starts
// where the grammar starts and advances on its own; a grammar pushed out
// of the cache stays usable until its last copy is freed, and is freed
// then; a closed cache still gives grammars, uncached. Every check
// compares the tokens allowed next with the llama package's own grammar.
func TestGrammarCache(t *testing.T) {
	t.Parallel()
	e := openTinyGemma(t, Config{})
	v := e.grammarVocab()
	vocabIDs := make([]uint32, len(v.pieces))
	for i := range vocabIDs {
		vocabIDs[i] = uint32(i)
	}
	allowed := func(g interface{ Apply([]llama.TokenData) }) []int32 {
		buf := make([]llama.TokenData, e.model.NumVocab())
		for i := range buf {
			buf[i].ID = int32(i)
		}
		g.Apply(buf)
		var ids []int32
		for _, td := range buf {
			if !math.IsInf(float64(td.Logit), -1) {
				ids = append(ids, td.ID)
			}
		}
		return ids
	}
	schema := func(i int) string {
		return string(llama.SchemaToGrammar(fmt.Appendf(nil,
			`{"type":"object","properties":{"k%d":{"type":"integer"}},"required":["k%d"]}`, i, i)))
	}
	c := &grammarCache{}
	gbnf := schema(0)
	ref := llama.NewGrammar(gbnf, vocabIDs, v.pieces, v.eog)
	defer ref.Free()
	start := allowed(ref)
	brace := int32(slices.Index(v.pieces, "{"))
	if len(start) == 0 || !slices.Contains(start, brace) {
		t.Fatalf("the grammar allows %d tokens first, %q not among them", len(start), "{")
	}

	a, b := c.get(gbnf, v.c), c.get(gbnf, v.c)
	if a == nil || b == nil {
		t.Fatal("no grammar")
	}
	if len(c.entries) != 1 || c.entries[0].copies != 2 {
		t.Fatalf("%d entries after two gets of one grammar; want one with two copies", len(c.entries))
	}
	first := c.entries[0]
	a.Accept(brace)
	ref.Accept(brace)
	if got, want := allowed(a), allowed(ref); !slices.Equal(got, want) {
		t.Fatalf("after %q a copy allows %d tokens, the llama package's grammar %d", "{", len(got), len(want))
	}
	if got := allowed(b); !slices.Equal(got, start) {
		t.Fatalf("advancing one copy moved the other: it allows %d tokens, want %d", len(got), len(start))
	}

	var others []*cGrammar
	for i := 1; i <= grammarCacheSize; i++ {
		others = append(others, c.get(schema(i), v.c))
	}
	if len(c.entries) != grammarCacheSize || !first.evicted || slices.Contains(c.entries, first) {
		t.Fatalf("after %d more grammars: %d entries, the first evicted %v", grammarCacheSize, len(c.entries), first.evicted)
	}
	if first.g.c == nil {
		t.Fatal("an evicted grammar was freed while copies of it were in use")
	}
	if got := allowed(b); !slices.Equal(got, start) {
		t.Fatalf("a copy of an evicted grammar allows %d tokens, want %d", len(got), len(start))
	}
	a.Free()
	b.Free()
	if first.g.c != nil || first.copies != 0 {
		t.Fatalf("an evicted grammar whose copies are freed: freed %v, %d copies", first.g.c == nil, first.copies)
	}

	kept := slices.Clone(c.entries)
	c.close()
	for _, g := range others[:len(others)-1] {
		g.Free()
	}
	if len(c.entries) != 0 {
		t.Fatalf("%d entries left after close", len(c.entries))
	}
	last := others[len(others)-1]
	g := c.get(gbnf, v.c)
	if g == nil || !slices.Equal(allowed(g), start) {
		t.Fatal("a closed cache gives no grammar, or one that does not start where the grammar starts")
	}
	g.Free()
	if len(c.entries) != 0 {
		t.Fatalf("a closed cache cached a grammar")
	}
	last.Free()
	for i, k := range kept {
		if k.g.c != nil {
			t.Errorf("cached grammar %d not freed after close and its copies' Free", i)
		}
	}
}
