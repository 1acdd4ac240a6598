package chat

import "fmt"

// MaxEmbedInputs is the most inputs one embeddings request may hold, as in
// the OpenAI API.
const MaxEmbedInputs = 2048

// EmbedInput is one text to embed: Text, or (Tokens not nil) token ids of
// the model's vocabulary, as OpenAI's input accepts either.
type EmbedInput struct {
	Text   string `json:"text,omitempty"`
	Tokens []int  `json:"tokens,omitempty"`
}

// EmbedRequest asks for one embedding per input.
type EmbedRequest struct {
	// Model names the model the client asked for; empty means the served one.
	Model  string       `json:"model,omitempty"`
	Inputs []EmbedInput `json:"inputs"`
	// Dimensions, when positive, truncates each embedding to its first
	// Dimensions values and normalises it again (Matryoshka embeddings);
	// it may not exceed the model's width.
	Dimensions int `json:"dimensions,omitempty"`
}

// EmbedResult holds the embeddings of an EmbedRequest's inputs, in their
// order, each of unit length (L2).
type EmbedResult struct {
	Model      string      `json:"model,omitempty"`
	Embeddings [][]float32 `json:"embeddings"`
	// PromptTokens counts the tokens of every input.
	PromptTokens int `json:"prompt_tokens"`
}

// Validate checks what every tier requires of an embeddings request: at
// least one input and at most MaxEmbedInputs, no input empty, dimensions
// not negative. The limits of the model (its context, its width) are the
// engine's to check.
func (r *EmbedRequest) Validate() error {
	switch {
	case len(r.Inputs) == 0:
		return Invalidf("input", "'input' must be a non-empty string or array.")
	case len(r.Inputs) > MaxEmbedInputs:
		return Invalidf("input", "Invalid 'input': %d inputs, the limit is %d.", len(r.Inputs), MaxEmbedInputs)
	case r.Dimensions < 0:
		return Invalidf("dimensions", "Invalid 'dimensions': must be at least 1, got %d.", r.Dimensions)
	}
	for i, in := range r.Inputs {
		if in.Text == "" && len(in.Tokens) == 0 {
			return Invalidf(fmt.Sprintf("input[%d]", i), "Invalid 'input[%d]': an input may not be empty.", i)
		}
	}
	return nil
}
