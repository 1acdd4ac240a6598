package rpc

import "github.com/slm-mesh/slm-mesh/internal/chat"

// contextError turns the error of a finished context into a *chat.Error
// that still unwraps to it.
func contextError(method string, err error) *chat.Error {
	return chat.Errorf(chat.Code(err), "call %s: %w", method, err)
}
