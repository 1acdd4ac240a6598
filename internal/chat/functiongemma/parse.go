package functiongemma

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// Output is what a Parser makes of the text it was given: plain text for
// the client, and the calls completed in it, in order.
type Output struct {
	Content   string
	ToolCalls []chat.ToolCall
}

// SyntaxError is a function call the Parser could not read. The parser
// drops the call and goes on with the text after it; the caller decides
// whether the reply is still worth sending.
type SyntaxError struct {
	// Call is the call's text from <start_function_call> on, as far as it
	// went.
	Call string
	// Offset is the byte of Call where reading failed.
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("functiongemma: malformed function call (%s at byte %d): %q", e.Msg, e.Offset, e.Call)
}

type parserState int

const (
	inText   parserState = iota
	inCall               // after <start_function_call>
	stopped              // after <start_function_response>
	finished             // after Finish
)

// Parser reads a FunctionGemma model's output as it streams, chunk by
// chunk, whatever the chunks' boundaries. Text outside calls is passed on,
// except a trailing piece that may be the start of a control token, which
// waits for the next chunk. A call is passed on whole, once its
// <end_function_call> arrives, as an OpenAI tool call whose arguments are a
// JSON object (a string). <start_function_response> ends the reply: the
// model asks for a result it cannot have, so the caller should stop
// generating (Stopped), and the parser ignores what follows.
//
// A Parser is not safe for concurrent use.
type Parser struct {
	// NewID returns the id of a parsed call; nil gives "call_" and 24
	// random hex digits.
	NewID func() string

	state   parserState
	pending string // text not yet passed on; in a call, the call after <start_function_call>
	scan    int    // in a call: how far pending has been scanned for its end
	inStr   bool   // in a call: scan is inside an <escape>…<escape> string
}

// Stopped reports whether the model has asked for a function's result
// (<start_function_response>): generation should end.
func (p *Parser) Stopped() bool { return p.state == stopped }

// Add takes the next chunk of generated text and returns what it
// completes. A malformed call gives a *SyntaxError (several, joined) next
// to the output of the rest.
func (p *Parser) Add(chunk string) (Output, error) {
	if p.state == stopped || p.state == finished {
		return Output{}, nil
	}
	p.pending += chunk
	var out Output
	var errs []error
	for {
		switch p.state {
		case inText:
			i, tag := firstTag(p.pending, StartCall, StartResponse)
			if i < 0 {
				keep := partialTagSuffix(p.pending, StartCall, StartResponse)
				out.Content += p.pending[:len(p.pending)-keep]
				p.pending = p.pending[len(p.pending)-keep:]
				return out, errors.Join(errs...)
			}
			out.Content += p.pending[:i]
			p.pending = p.pending[i+len(tag):]
			if tag == StartResponse {
				p.state, p.pending = stopped, ""
				return out, errors.Join(errs...)
			}
			p.state, p.scan, p.inStr = inCall, 0, false
		case inCall:
			end, tag, ok := p.scanCall()
			if !ok {
				return out, errors.Join(errs...)
			}
			body := p.pending[:end]
			if tag == StartResponse {
				errs = append(errs, &SyntaxError{Call: StartCall + body, Offset: len(StartCall) + end, Msg: StartResponse + " before " + EndCall})
				p.state, p.pending = stopped, ""
				return out, errors.Join(errs...)
			}
			p.pending = p.pending[end+len(tag):]
			p.state = inText
			call, err := p.parseCall(body)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out.ToolCalls = append(out.ToolCalls, call)
		default:
			return out, errors.Join(errs...)
		}
	}
}

// Finish ends the reply: it returns the text held back, and a *SyntaxError
// if a call was left open (the generation ran out of tokens inside it).
func (p *Parser) Finish() (Output, error) {
	defer func() { p.state, p.pending = finished, "" }()
	switch p.state {
	case inText:
		return Output{Content: p.pending}, nil
	case inCall:
		return Output{}, &SyntaxError{Call: StartCall + p.pending, Offset: len(StartCall) + len(p.pending), Msg: "no " + EndCall}
	}
	return Output{}, nil
}

// scanCall looks for the end of the call in pending, outside <escape>
// strings, resuming where the last look stopped. It returns the end's
// offset and tag (EndCall, or StartResponse for a call cut short), or
// ok false when the call goes on past what has arrived.
func (p *Parser) scanCall() (end int, tag string, ok bool) {
	for p.scan < len(p.pending) {
		j := strings.IndexByte(p.pending[p.scan:], '<')
		if j < 0 {
			p.scan = len(p.pending)
			break
		}
		p.scan += j
		rest := p.pending[p.scan:]
		tags := []string{Escape}
		if !p.inStr {
			tags = append(tags, EndCall, StartResponse)
		}
		matched := false
		for _, t := range tags {
			if strings.HasPrefix(rest, t) {
				if t != Escape {
					return p.scan, t, true
				}
				p.inStr = !p.inStr
				p.scan += len(t)
				matched = true
				break
			}
			if strings.HasPrefix(t, rest) {
				return 0, "", false // the tag may be completed by the next chunk
			}
		}
		if !matched {
			p.scan++
		}
	}
	return 0, "", false
}

// parseCall reads "call:name{...}".
func (p *Parser) parseCall(body string) (chat.ToolCall, error) {
	fail := func(at int, format string, args ...any) (chat.ToolCall, error) {
		return chat.ToolCall{}, &SyntaxError{Call: StartCall + body + EndCall, Offset: len(StartCall) + at, Msg: fmt.Sprintf(format, args...)}
	}
	r := reader{s: body}
	r.space()
	if !strings.HasPrefix(r.rest(), "call:") {
		return fail(r.i, "want %q", "call:")
	}
	r.i += len("call:")
	start := r.i
	for r.i < len(r.s) && isNameByte(r.s[r.i]) {
		r.i++
	}
	name := r.s[start:r.i]
	if name == "" {
		return fail(r.i, "want a function name")
	}
	r.space()
	if r.peek() != '{' {
		return fail(r.i, "want '{' after the function name")
	}
	var args bytes.Buffer
	if err := r.object(&args); err != nil {
		return fail(err.at, "%s", err.msg)
	}
	r.space()
	if r.i != len(r.s) {
		return fail(r.i, "text after the arguments")
	}
	return chat.ToolCall{
		ID:       p.newID(),
		Type:     chat.ToolTypeFunction,
		Function: chat.ToolCallFunction{Name: name, Arguments: args.String()},
	}, nil
}

func (p *Parser) newID() string {
	if p.NewID != nil {
		return p.NewID()
	}
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on the systems Go supports
	}
	return "call_" + hex.EncodeToString(b[:])
}

// isNameByte: a function name is made of these (OpenAI allows letters,
// digits, '_' and '-'; '.' and ':' occur in namespaced tools).
func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == '.' || c == ':' || c >= 0x80
}

// firstTag returns the offset of the first of tags in s and which it is,
// or -1.
func firstTag(s string, tags ...string) (int, string) {
	best, which := -1, ""
	for _, t := range tags {
		if i := strings.Index(s, t); i >= 0 && (best < 0 || i < best) {
			best, which = i, t
		}
	}
	return best, which
}

// partialTagSuffix is the length of the longest end of s that is a proper
// start of one of tags.
func partialTagSuffix(s string, tags ...string) int {
	longest := 0
	for _, t := range tags {
		for n := min(len(s), len(t)-1); n > longest; n-- {
			if strings.HasSuffix(s, t[:n]) {
				longest = n
				break
			}
		}
	}
	return longest
}

// syntaxErr is a fault at byte at of a call's body.
type syntaxErr struct {
	at  int
	msg string
}

// reader reads the arguments' syntax and writes them as JSON.
type reader struct {
	s string
	i int
}

func (r *reader) rest() string { return r.s[r.i:] }

func (r *reader) peek() byte {
	if r.i < len(r.s) {
		return r.s[r.i]
	}
	return 0
}

func (r *reader) space() {
	for r.i < len(r.s) && strings.IndexByte(" \t\r\n", r.s[r.i]) >= 0 {
		r.i++
	}
}

func (r *reader) errorf(format string, args ...any) *syntaxErr {
	return &syntaxErr{at: r.i, msg: fmt.Sprintf(format, args...)}
}

// maxDepth bounds nesting, so that a runaway generation of "{{{{" cannot
// exhaust the stack.
const maxDepth = 64

// object reads {key:value,...}, r at the '{'.
func (r *reader) object(out *bytes.Buffer) *syntaxErr { return r.objectAt(out, 0) }

func (r *reader) objectAt(out *bytes.Buffer, depth int) *syntaxErr {
	if depth > maxDepth {
		return r.errorf("nested deeper than %d", maxDepth)
	}
	r.i++ // '{'
	out.WriteByte('{')
	seen := map[string]bool{}
	r.space()
	if r.peek() == '}' {
		r.i++
		out.WriteByte('}')
		return nil
	}
	for {
		r.space()
		key, err := r.key()
		if err != nil {
			return err
		}
		if seen[key] {
			return r.errorf("duplicate key %q", key)
		}
		seen[key] = true
		if len(seen) > 1 {
			out.WriteByte(',')
		}
		writeJSONString(out, key)
		out.WriteByte(':')
		if err := r.value(out, depth); err != nil {
			return err
		}
		r.space()
		switch r.peek() {
		case ',':
			r.i++
		case '}':
			r.i++
			out.WriteByte('}')
			return nil
		default:
			return r.errorf("want ',' or '}' in an object")
		}
	}
}

// key reads an object key: bare, or between <escape> tokens.
func (r *reader) key() (string, *syntaxErr) {
	var key string
	if strings.HasPrefix(r.rest(), Escape) {
		s, err := r.escaped()
		if err != nil {
			return "", err
		}
		key = s
	} else {
		start := r.i
		for r.i < len(r.s) && strings.IndexByte(":{}[],<", r.s[r.i]) < 0 {
			r.i++
		}
		key = strings.TrimSpace(r.s[start:r.i])
		if key == "" {
			return "", r.errorf("want a key")
		}
	}
	r.space()
	if r.peek() != ':' {
		return "", r.errorf("want ':' after key %q", key)
	}
	r.i++
	return key, nil
}

// escaped reads <escape>text<escape>.
func (r *reader) escaped() (string, *syntaxErr) {
	start := r.i
	r.i += len(Escape)
	j := strings.Index(r.rest(), Escape)
	if j < 0 {
		r.i = start
		return "", r.errorf("unterminated %s string", Escape)
	}
	s := r.s[r.i : r.i+j]
	r.i += j + len(Escape)
	return s, nil
}

// value reads one value and writes it as JSON.
func (r *reader) value(out *bytes.Buffer, depth int) *syntaxErr {
	r.space()
	switch {
	case strings.HasPrefix(r.rest(), Escape):
		s, err := r.escaped()
		if err != nil {
			return err
		}
		writeJSONString(out, s)
		return nil
	case r.peek() == '{':
		return r.objectAt(out, depth+1)
	case r.peek() == '[':
		return r.array(out, depth+1)
	}
	// A bare value runs to the next ',', '}' or ']'. true, false, null
	// and JSON numbers are themselves; anything else is taken as a string
	// the model forgot to escape.
	start := r.i
	for r.i < len(r.s) && strings.IndexByte(",}]<{[", r.s[r.i]) < 0 {
		r.i++
	}
	word := strings.TrimSpace(r.s[start:r.i])
	if word == "" {
		return r.errorf("want a value")
	}
	if word == "true" || word == "false" || word == "null" || isJSONNumber(word) {
		out.WriteString(word)
		return nil
	}
	writeJSONString(out, word)
	return nil
}

// array reads [value,...], r at the '['.
func (r *reader) array(out *bytes.Buffer, depth int) *syntaxErr {
	if depth > maxDepth {
		return r.errorf("nested deeper than %d", maxDepth)
	}
	r.i++ // '['
	out.WriteByte('[')
	r.space()
	if r.peek() == ']' {
		r.i++
		out.WriteByte(']')
		return nil
	}
	for n := 0; ; n++ {
		if n > 0 {
			out.WriteByte(',')
		}
		if err := r.value(out, depth); err != nil {
			return err
		}
		r.space()
		switch r.peek() {
		case ',':
			r.i++
		case ']':
			r.i++
			out.WriteByte(']')
			return nil
		default:
			return r.errorf("want ',' or ']' in an array")
		}
	}
}

// isJSONNumber reports whether s is a number as JSON writes one.
func isJSONNumber(s string) bool {
	var n json.Number
	return json.Unmarshal([]byte(s), &n) == nil && s[0] != '"'
}

// writeJSONString writes s as a JSON string, leaving <, > and & as they
// are.
func writeJSONString(out *bytes.Buffer, s string) {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)           // a string always encodes
	out.Truncate(out.Len() - 1) // Encode's newline
}
