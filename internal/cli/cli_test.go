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

// TestValuesRefused: what no flag type refuses by itself — a negative
// timeout, a log level hclog does not know — is refused by Parse, from
// the command line and from the environment, naming the flag; a signed
// duration takes a negative value.
func TestValuesRefused(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  string // SLM_TEST_DRAIN's value, if not empty
		want string // in the error; "" for none
	}{
		{"defaults", nil, "", ""},
		{"negative duration", []string{"-drain", "-1s"}, "", "-drain (SLM_TEST_DRAIN) -1s: must not be negative"},
		{"negative duration from the environment", nil, "-5m", "must not be negative"},
		{"signed duration", []string{"-wait", "-1s"}, "", ""},
		{"unknown log level", []string{"-log-level", "bogus"}, "", `-log-level (SLM_LOG_LEVEL) "bogus"`},
		{"log level in capitals", []string{"-log-level", "DEBUG"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("SLM_TEST_DRAIN", tt.env)
			}
			f := New("test")
			f.Set().SetOutput(&bytes.Buffer{})
			f.Duration("drain", "SLM_TEST_DRAIN", time.Minute, "drain")
			wait := f.SignedDuration("wait", "SLM_TEST_WAIT", time.Second, "wait (negative: none)")
			logging := f.Log()
			err := f.Parse(tt.args)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse(%v): %v", tt.args, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Parse(%v) = %v, want an error containing %q", tt.args, err, tt.want)
			}
			if tt.name == "signed duration" && *wait != -time.Second {
				t.Errorf("-wait = %s, want -1s", *wait)
			}
			if err == nil && logging.Logger("test") == nil {
				t.Error("no logger")
			}
		})
	}
}
