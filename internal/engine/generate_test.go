package engine

import (
	"context"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// Generate is GenerateDeltas with the text alone, as most tests want it:
// onDelta receives each new piece of text.
func (e *Engine) Generate(ctx context.Context, req Request, onDelta func(string) error) (chat.Result, error) {
	var f func(chat.Delta) error
	if onDelta != nil {
		f = func(d chat.Delta) error {
			if d.Content == "" {
				return nil
			}
			return onDelta(d.Content)
		}
	}
	return e.GenerateDeltas(ctx, req, f)
}
