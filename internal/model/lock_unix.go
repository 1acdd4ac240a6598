//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package model

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// lockDir takes an exclusive advisory lock on the cache directory, waiting
// (as long as ctx allows) while another process holds it. Locking the
// directory rather than a lock file leaves nothing behind in the cache.
func lockDir(ctx context.Context, dir string, log hclog.Logger) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	for waiting := false; ; {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				syscall.Flock(fd, syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		if !waiting {
			log.Info("waiting for another process using the model cache", "dir", dir)
			waiting = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, context.Cause(ctx)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
