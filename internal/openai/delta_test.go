package openai

import "github.com/slm-mesh/slm-mesh/internal/chat"

// Delta writes a piece of text without logprobs, as the tests stream it;
// the gateway sends chat.Deltas (Send). Empty text writes nothing.
func (s *StreamWriter) Delta(text string) error {
	return s.Send(chat.Delta{Content: text})
}
