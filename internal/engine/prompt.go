package engine

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/template"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// renderer turns chat messages into the prompt the model was trained on.
type renderer struct {
	// name says which template is in use, for logs and /health.
	name  string
	tmpl  *template.Template // nil: the plain fallback
	stops []string           // stop strings the template implies
}

// newRenderer picks the chat template for a model from the Jinja text in its
// GGUF (tokenizer.chat_template). ollama's template package recognises the
// common families (gemma3, llama3, chatml, ...) and gives an equivalent Go
// template; a model without a template, or with one it does not recognise,
// gets the plain fallback (see renderPlain).
func newRenderer(chatTemplate string) (*renderer, error) {
	if strings.TrimSpace(chatTemplate) == "" {
		return &renderer{name: "plain"}, nil
	}
	named, err := template.Named(chatTemplate)
	if err != nil {
		return &renderer{name: "plain"}, nil
	}
	// The bundled template files end with a newline after their last action;
	// it is the file's, not the format's (Gemma's prompt ends with
	// "<start_of_turn>model\n", not a blank line).
	text := string(named.Bytes)
	if strings.HasSuffix(text, "}}\n") {
		text = strings.TrimSuffix(text, "\n")
	}
	t, err := template.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parse chat template %s: %w", named.Name, err)
	}
	r := &renderer{name: named.Name, tmpl: t}
	if named.Parameters != nil {
		r.stops = named.Parameters.Stop
	}
	return r, nil
}

// prompt is a rendered prompt in parts: the chat template's own text, which
// may spell control tokens such as <start_of_turn>, and message contents,
// which are plain text whatever they spell (see promptTokenizer).
type prompt []promptPart

// promptPart is one piece of a prompt.
type promptPart struct {
	text    string
	content bool // a message's content, as the client sent it
}

// add appends text as a part unless it is empty.
func (p prompt) add(text string, content bool) prompt {
	if text == "" {
		return p
	}
	return append(p, promptPart{text: text, content: content})
}

// String returns the prompt's text.
func (p prompt) String() string {
	var b strings.Builder
	for _, part := range p {
		b.WriteString(part.text)
	}
	return b.String()
}

// render returns the prompt for msgs, ending where the model's reply begins.
//
// The template never sees the contents: it renders a mark for each one, and
// the marks in its output are then replaced by the contents as content
// parts, so that nothing a client writes can pass for template text. An
// empty content is left empty, since templates test contents only for
// emptiness ({{ if .Content }}), and it has no text to protect.
func (r *renderer) render(msgs []chat.Message) (prompt, error) {
	if r.tmpl == nil {
		return renderPlain(msgs), nil
	}
	// The template package merges consecutive messages in place, so it gets
	// a copy.
	in := make([]api.Message, len(msgs))
	for i, m := range msgs {
		in[i] = api.Message{Role: m.Role}
		if m.Content != "" {
			in[i].Content = contentMark(i)
		}
	}
	var b strings.Builder
	if err := r.tmpl.Execute(&b, template.Values{Messages: in}); err != nil {
		return nil, fmt.Errorf("render chat template %s: %w", r.name, err)
	}
	p, err := replaceMarks(b.String(), msgs)
	if err != nil {
		return nil, fmt.Errorf("render chat template %s: %w", r.name, err)
	}
	return p, nil
}

// contentMark stands for message i's content while the template renders.
// Chat templates never write NUL bytes, so a mark cannot be confused with
// the template's own text.
func contentMark(i int) string { return "\x00" + strconv.Itoa(i) + "\x00" }

// replaceMarks turns a template's output into a prompt: the text around the
// marks is template text, and each mark becomes its message's content.
func replaceMarks(out string, msgs []chat.Message) (prompt, error) {
	var p prompt
	for {
		before, rest, found := strings.Cut(out, "\x00")
		if !found {
			return p.add(out, false), nil
		}
		n, after, closed := strings.Cut(rest, "\x00")
		i, err := strconv.Atoi(n)
		if !closed || err != nil || i < 0 || i >= len(msgs) {
			// Only a template that edits a content, or writes NUL bytes of
			// its own, gets here.
			return nil, errors.New("the template altered a message's content")
		}
		p = p.add(before, false).add(msgs[i].Content, true)
		out = after
	}
}

// renderPlain is the fallback for models without a chat template, which are
// usually base (completion) models: the message texts, system first, joined
// by blank lines, with no role labels, so that the model simply continues
// the text.
func renderPlain(msgs []chat.Message) prompt {
	ordered := make([]chat.Message, 0, len(msgs))
	for _, m := range msgs {
		if m.Role == chat.RoleSystem {
			ordered = append(ordered, m)
		}
	}
	for _, m := range msgs {
		if m.Role != chat.RoleSystem {
			ordered = append(ordered, m)
		}
	}
	var p prompt
	for i, m := range ordered {
		if i > 0 {
			p = p.add("\n\n", false)
		}
		p = p.add(m.Content, true)
	}
	return p
}
