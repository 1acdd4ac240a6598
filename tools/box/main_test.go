package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage:"},
		{[]string{"launch"}, 2, `unknown command "launch"`},
		{[]string{"up", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"status", "-dir", dir}, 1, "no box is up"},
		{[]string{"env", "-dir", dir}, 1, "no box is up"},
		{[]string{"down", "-dir", dir}, 0, ""},
		{[]string{"down", "-h"}, 0, "usage:"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("box %v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}
