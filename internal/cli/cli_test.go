package cli

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"
)

// TestSecretIsNeverShown: a secret flag takes its value from the
// environment or the command line like any other, but the usage text a
// flag error prints (into a Nomad task's log, say) does not show it.
func TestSecretIsNeverShown(t *testing.T) {
	const fromEnv, fromFlag = "env-secret-5f1c", "flag-secret-9a7e"
	t.Setenv("SLM_TEST_TOKEN", fromEnv)
	tests := []struct {
		args []string
		want string
	}{
		{nil, fromEnv},
		{[]string{"-token", fromFlag}, fromFlag},
	}
	for _, tt := range tests {
		f := New("test")
		token := f.Secret("token", "SLM_TEST_TOKEN", "a shared token")
		var out bytes.Buffer
		f.Set().SetOutput(&out)
		if err := f.Parse(tt.args); err != nil || *token != tt.want {
			t.Errorf("%v: token %q, %v; want %q", tt.args, *token, err, tt.want)
		}
		if err := f.Parse(append(tt.args, "-no-such-flag")); err == nil {
			t.Fatal("a bad flag was accepted")
		}
		usage := out.String()
		if !strings.Contains(usage, "-token") || !strings.Contains(usage, "SLM_TEST_TOKEN") {
			t.Errorf("the usage does not show the flag:\n%s", usage)
		}
		if strings.Contains(usage, fromEnv) || strings.Contains(usage, fromFlag) {
			t.Errorf("the usage shows the secret:\n%s", usage)
		}
	}
}

// TestTimeouts: the four timeout flags take their defaults, then the
// environment, then the command line.
func TestTimeouts(t *testing.T) {
	t.Setenv("SLM_READ_TIMEOUT", "3s")
	f := New("test")
	got := f.Timeouts(PrivateTimeouts)
	if err := f.Parse([]string{"-write-timeout", "4s"}); err != nil {
		t.Fatal(err)
	}
	want := Timeouts{ReadHeader: PrivateTimeouts.ReadHeader, Read: 3 * time.Second, Write: 4 * time.Second, Idle: PrivateTimeouts.Idle}
	if *got != want {
		t.Errorf("timeouts %+v, want %+v", *got, want)
	}
}

func TestParseTool(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		ok      bool
		printed string
	}{
		{"flags", []string{"-n", "3"}, 0, true, ""},
		{"help", []string{"-h"}, 0, false, "usage: tool [-n N]"},
		{"bad flag", []string{"-x"}, 2, false, "flag provided but not defined: -x"},
		{"leftover", []string{"-n", "3", "extra"}, 2, false, `tool: unexpected argument "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out strings.Builder
			fs := flag.NewFlagSet("tool", flag.ContinueOnError)
			fs.SetOutput(&out)
			n := fs.Int("n", 0, "a number")
			code, ok := ParseTool(fs, tc.args, "tool [-n N]")
			if code != tc.code || ok != tc.ok {
				t.Fatalf("ParseTool(%q) = %d, %v; want %d, %v (printed %q)", tc.args, code, ok, tc.code, tc.ok, out.String())
			}
			if !strings.Contains(out.String(), tc.printed) || (tc.printed == "" && out.Len() > 0) {
				t.Errorf("printed %q, want it to contain %q", out.String(), tc.printed)
			}
			if tc.ok && *n != 3 {
				t.Errorf("-n = %d, want 3", *n)
			}
		})
	}
}
