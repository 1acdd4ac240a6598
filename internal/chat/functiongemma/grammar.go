package functiongemma

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// GrammarTokens are the ids of the format's control tokens in a model's
// vocabulary: a grammar names each as one token (GBNF's <[id]>), never as
// the text it spells.
type GrammarTokens struct {
	StartCall, EndCall, Escape int
}

// stringChar is what a string argument may hold under a grammar: any
// text but '<', so that the text "<escape>" (which the Parser would take
// for the end of the string) cannot be spelt in plain tokens, and but
// control characters other than tab and newline. No rule of the grammar
// admits U+0001, the piece the engine gives the format's control tokens,
// so that a control token is only ever taken where the grammar names it.
const stringChar = `[^<\x00-\x08\x0b-\x1f]`

// maxDigits bounds a number's digits where the schema gives no range.
const maxDigits = 15

// maxIntegerAlternatives is the widest integer range (minimum to
// maximum) written as its integers; a wider one is bounded by its digits
// only.
const maxIntegerAlternatives = 256

// maxSchemaDepth bounds how deeply schemas are followed; deeper values
// may be anything.
const maxSchemaDepth = 16

// Grammar returns a llama.cpp grammar (GBNF) whose sentences are calls of
// tools in the format, tok naming the control tokens:
//
//	<start_function_call>call:NAME{key:value,...}<end_function_call>
//
// one call, or with parallel one or more. The arguments follow each
// function's parameters: the properties in sorted order (as Render writes
// them), the required ones always; strings between <escape> tokens,
// bounded by minLength and maxLength; integers (within minimum and
// maximum when the range is small) and numbers; booleans,
// null, enums and consts; arrays bounded by minItems and maxItems;
// anyOf, oneOf and lists of types as alternatives. What it does not
// follow ($ref, patterns, formats) admits any value. A string argument
// never holds '<' (see stringChar).
//
// The grammar ends after the calls, so that a sampler constrained by it
// must then end the generation.
func Grammar(tools []chat.Tool, parallel bool, tok GrammarTokens) (string, error) {
	if len(tools) == 0 {
		return "", fmt.Errorf("no tools to call")
	}
	g := &gram{tok: tok}
	var fns []string
	for i, t := range tools {
		var schema map[string]any
		if p := bytes.TrimSpace(t.Function.Parameters); len(p) > 0 && string(p) != "null" {
			v, err := decodeJSON(p)
			if err != nil {
				return "", fmt.Errorf("tools[%d].function.parameters: %w", i, err)
			}
			m, ok := v.(map[string]any)
			if !ok {
				return "", fmt.Errorf("tools[%d].function.parameters: not a JSON Schema object", i)
			}
			schema = m
		}
		args := `"{}"`
		if schema != nil {
			args = g.arguments(schema)
		}
		fns = append(fns, g.rule(fmt.Sprintf("fn%d", i), lit("call:"+t.Function.Name)+" "+args))
	}
	call := g.rule("call", fmt.Sprintf("<[%d]> (%s) <[%d]>", tok.StartCall, strings.Join(fns, " | "), tok.EndCall))
	root := call
	if parallel {
		root = call + "+"
	}
	var b strings.Builder
	b.WriteString("root ::= " + root + "\n")
	for _, r := range g.rules {
		b.WriteString(r + "\n")
	}
	return b.String(), nil
}

// arguments is the expression of a call's arguments, always an object, as
// the Parser reads them: the object the schema's properties describe, or
// any object when it names none (`{}`, `{"type":"object"}`), never a
// bare value the Parser would drop.
func (g *gram) arguments(s map[string]any) string {
	if _, ok := s["properties"].(map[string]any); ok {
		return g.typed("object", s, 0)
	}
	g.any()
	return "vobj"
}

// gram collects a grammar's rules.
type gram struct {
	tok     GrammarTokens
	rules   []string
	n       int
	generic bool // the generic value rules are written
}

// rule adds "name ::= body" and returns name.
func (g *gram) rule(name, body string) string {
	g.rules = append(g.rules, name+" ::= "+body)
	return name
}

func (g *gram) fresh(prefix string) string {
	g.n++
	return fmt.Sprintf("%s%d", prefix, g.n)
}

// escaped is a string value: text between <escape> tokens.
func (g *gram) escaped(body string) string {
	return fmt.Sprintf("<[%d]> %s <[%d]>", g.tok.Escape, body, g.tok.Escape)
}

// schema returns an expression for the values schema admits.
func (g *gram) schema(s map[string]any, depth int) string {
	if depth > maxSchemaDepth {
		return g.any()
	}
	if v, ok := s["const"]; ok {
		return g.literal(v)
	}
	if e, ok := s["enum"].([]any); ok && len(e) > 0 {
		alts := make([]string, len(e))
		for i, v := range e {
			alts[i] = g.literal(v)
		}
		return "(" + strings.Join(alts, " | ") + ")"
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		if a, ok := s[k].([]any); ok && len(a) > 0 {
			alts := make([]string, len(a))
			for i, v := range a {
				alts[i] = g.schemaOrAny(v, depth+1)
			}
			return "(" + strings.Join(alts, " | ") + ")"
		}
	}
	switch t := s["type"].(type) {
	case string:
		return g.typed(t, s, depth)
	case []any:
		var alts []string
		for _, v := range t {
			if name, ok := v.(string); ok {
				alts = append(alts, g.typed(name, s, depth))
			}
		}
		if len(alts) > 0 {
			return "(" + strings.Join(alts, " | ") + ")"
		}
	}
	if _, ok := s["properties"]; ok {
		return g.typed("object", s, depth)
	}
	return g.any()
}

func (g *gram) schemaOrAny(v any, depth int) string {
	if m, ok := v.(map[string]any); ok {
		return g.schema(m, depth)
	}
	return g.any()
}

// typed returns an expression for the values of JSON type t that s admits.
func (g *gram) typed(t string, s map[string]any, depth int) string {
	switch t {
	case "string":
		lo, hi := bounds(s, "minLength", "maxLength")
		return g.escaped(stringChar + repeat(lo, hi))
	case "integer", "number":
		digits := fmt.Sprintf("[0-9]{1,%d}", maxDigits)
		lo, okLo := number(s["minimum"])
		hi, okHi := number(s["maximum"])
		if t == "integer" && okLo && okHi && hi >= lo && hi-lo < maxIntegerAlternatives {
			// A small range is its integers, exactly.
			var alts []string
			for v := int64(math.Ceil(lo)); float64(v) <= hi; v++ {
				alts = append(alts, lit(strconv.FormatInt(v, 10)))
			}
			if len(alts) > 0 {
				return "(" + strings.Join(alts, " | ") + ")"
			}
		}
		if okLo && okHi {
			n := max(len(strconv.FormatInt(int64(abs(lo)), 10)), len(strconv.FormatInt(int64(abs(hi)), 10)))
			digits = fmt.Sprintf("[0-9]{1,%d}", min(n, maxDigits))
		}
		sign := `"-"? `
		if okLo && lo >= 0 {
			sign = ""
		}
		if t == "number" {
			return "(" + sign + digits + ` ("." [0-9]{1,6})?)`
		}
		return "(" + sign + digits + ")"
	case "boolean":
		return `("true" | "false")`
	case "null":
		return `"null"`
	case "array":
		item := g.any()
		if it, ok := s["items"]; ok {
			item = g.schemaOrAny(it, depth+1)
		}
		item = g.rule(g.fresh("item"), item)
		lo, hi := bounds(s, "minItems", "maxItems")
		switch {
		case hi == 0:
			return `"[" "]"`
		case hi < 0:
			more := "(\",\" " + item + ")*"
			if lo <= 1 {
				if lo == 0 {
					return `"[" (` + item + " " + more + `)? "]"`
				}
				return `"[" ` + item + " " + more + ` "]"`
			}
			return `"[" ` + item + ` ("," ` + item + `){` + strconv.Itoa(lo-1) + `,} "]"`
		default:
			more := `("," ` + item + `)` + repeat(max(lo-1, 0), hi-1)
			if lo == 0 {
				return `"[" (` + item + " " + more + `)? "]"`
			}
			return `"[" ` + item + " " + more + ` "]"`
		}
	case "object":
		props, ok := s["properties"].(map[string]any)
		if !ok {
			return g.any()
		}
		required := map[string]bool{}
		if r, ok := s["required"].([]any); ok {
			for _, v := range r {
				if k, ok := v.(string); ok {
					required[k] = true
				}
			}
		}
		return g.object(props, required, depth)
	}
	return g.any()
}

// object returns a rule for an object with props, in sorted order, those
// in required always and the others optionally, separated by commas.
//
// first(i) is the members from the i-th on when none has been written,
// rest(i) the same after one has (each then starts with a comma).
func (g *gram) object(props map[string]any, required map[string]bool, depth int) string {
	keys := sortedKeys(props)
	name := g.fresh("obj")
	n := len(keys)
	kv := make([]string, n)
	for i, k := range keys {
		kv[i] = g.key(k) + " " + g.schemaOrAny(props[k], depth+1)
	}
	rest := make([]string, n+1)
	for i := n - 1; i >= 0; i-- {
		item := `"," ` + kv[i]
		if !required[keys[i]] {
			item = "(" + item + ")?"
		}
		rest[i] = g.rule(fmt.Sprintf("%s-r%d", name, i), strings.TrimSpace(item+" "+rest[i+1]))
	}
	first := make([]string, n+1)
	for i := n - 1; i >= 0; i-- {
		here := strings.TrimSpace(kv[i] + " " + rest[i+1])
		switch {
		case required[keys[i]]:
			first[i] = g.rule(fmt.Sprintf("%s-f%d", name, i), here)
		case first[i+1] == "":
			first[i] = g.rule(fmt.Sprintf("%s-f%d", name, i), "("+here+")?")
		default:
			first[i] = g.rule(fmt.Sprintf("%s-f%d", name, i), here+" | "+first[i+1])
		}
	}
	return g.rule(name, strings.TrimSpace(`"{" `+first[0]+` "}"`))
}

// key is a member's key and its colon: bare, as Render writes it, or
// between <escape> tokens when the Parser could not read it bare.
func (g *gram) key(k string) string {
	if k == "" || strings.ContainsAny(k, ":{}[],<") || strings.TrimSpace(k) != k {
		return g.escaped(lit(k)) + ` ":"`
	}
	return lit(k + ":")
}

// literal returns an expression for one value as Render writes it.
func (g *gram) literal(v any) string {
	switch v := v.(type) {
	case string:
		if v == "" {
			return g.escaped("")
		}
		return g.escaped(lit(v))
	case nil:
		return `"null"`
	case bool:
		return lit(strconv.FormatBool(v))
	case interface{ String() string }: // json.Number
		return lit(v.String())
	}
	return g.any()
}

// any returns the rule for any value, written once.
func (g *gram) any() string {
	if !g.generic {
		g.generic = true
		g.rule("value", `vstr | vnum | "true" | "false" | "null" | vobj | varr`)
		g.rule("vstr", g.escaped(stringChar+"*"))
		g.rule("vnum", fmt.Sprintf(`"-"? [0-9]{1,%d} ("." [0-9]{1,6})?`, maxDigits))
		g.rule("vobj", `"{" (vkv ("," vkv)*)? "}"`)
		g.rule("vkv", `[a-zA-Z0-9_]+ ":" value`)
		g.rule("varr", `"[" (value ("," value)*)? "]"`)
	}
	return "value"
}

// bounds reads a pair of non-negative integer bounds; hi is -1 when
// absent.
func bounds(s map[string]any, minKey, maxKey string) (lo, hi int) {
	lo, hi = 0, -1
	if v, ok := number(s[minKey]); ok && v > 0 {
		lo = int(min(v, 1<<20))
	}
	if v, ok := number(s[maxKey]); ok && v >= 0 {
		hi = int(min(v, 1<<20))
	}
	if hi >= 0 && hi < lo {
		hi = lo
	}
	return lo, hi
}

// repeat is GBNF's repetition from lo to hi times (hi -1: no bound).
func repeat(lo, hi int) string {
	switch {
	case hi < 0 && lo == 0:
		return "*"
	case hi < 0:
		return fmt.Sprintf("{%d,}", lo)
	default:
		return fmt.Sprintf("{%d,%d}", lo, hi)
	}
}

func number(v any) (float64, bool) {
	n, ok := v.(interface{ Float64() (float64, error) })
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// lit is s as a GBNF string literal.
func lit(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(&b, `\x%02X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
