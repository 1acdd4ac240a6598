package engine

import (
	"fmt"
	"strings"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/template"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// renderer turns chat messages into the prompt text the model was trained on.
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

// render returns the prompt for msgs, ending where the model's reply begins.
func (r *renderer) render(msgs []chat.Message) (string, error) {
	if r.tmpl == nil {
		return renderPlain(msgs), nil
	}
	// The template package merges consecutive messages in place, so it gets
	// a copy.
	in := make([]api.Message, len(msgs))
	for i, m := range msgs {
		in[i] = api.Message{Role: m.Role, Content: m.Content}
	}
	var b strings.Builder
	if err := r.tmpl.Execute(&b, template.Values{Messages: in}); err != nil {
		return "", fmt.Errorf("render chat template %s: %w", r.name, err)
	}
	return b.String(), nil
}

// renderPlain is the fallback for models without a chat template, which are
// usually base (completion) models: the message texts, system first, joined
// by blank lines, with no role labels, so that the model simply continues
// the text.
func renderPlain(msgs []chat.Message) string {
	parts := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if m.Role == chat.RoleSystem {
			parts = append(parts, m.Content)
		}
	}
	for _, m := range msgs {
		if m.Role != chat.RoleSystem {
			parts = append(parts, m.Content)
		}
	}
	return strings.Join(parts, "\n\n")
}
