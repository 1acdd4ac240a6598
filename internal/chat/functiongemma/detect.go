package functiongemma

import (
	"slices"
	"strings"
)

// Detect reports whether a model speaks FunctionGemma's format, from what
// its GGUF says: its chat template (tokenizer.chat_template) writes calls
// with <start_function_call> and declarations with
// <start_function_declaration>, and its vocabulary (tokenizer.ggml.tokens)
// holds every control token of the format, so that each is one token. A
// nil vocabulary is not checked; a model without a chat template is judged
// by its vocabulary alone.
func Detect(chatTemplate string, tokens []string) bool {
	if chatTemplate == "" && tokens == nil {
		return false
	}
	if chatTemplate != "" && (!strings.Contains(chatTemplate, StartCall) || !strings.Contains(chatTemplate, StartDeclaration)) {
		return false
	}
	if tokens == nil {
		return true
	}
	for _, t := range Tokens() {
		if !slices.Contains(tokens, t) {
			return false
		}
	}
	return true
}
