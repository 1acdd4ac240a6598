//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package model

import (
	"context"

	"github.com/hashicorp/go-hclog"
)

// lockDir does nothing where flock is not available: concurrent downloads
// of the same model into one cache are then the operator's to avoid.
func lockDir(ctx context.Context, dir string, log hclog.Logger) (unlock func(), err error) {
	return func() {}, nil
}
