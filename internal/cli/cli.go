// Package cli holds what the three service binaries share on the command
// line: flags whose defaults come from environment variables, the logger,
// and running until a signal.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Flags registers flags on a FlagSet. Each flag's default is read from an
// environment variable first, so that `-addr` and `SLM_..._ADDR` are the
// same setting (the flag wins), as Nomad and Consul do with their own.
type Flags struct {
	fs      *flag.FlagSet
	errs    []error
	checks  []func() error // run after parsing: values no flag type refuses
	version *bool
}

// New returns Flags for the named command, with -version.
func New(name string) *Flags {
	f := &Flags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	f.version = f.fs.Bool("version", false, "print the version and exit")
	return f
}

// Set is the underlying FlagSet.
func (f *Flags) Set() *flag.FlagSet { return f.fs }

func (f *Flags) usage(env, usage string) string {
	return fmt.Sprintf("%s (env %s)", usage, env)
}

// String registers a string flag.
func (f *Flags) String(name, env, def, usage string) *string {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	return f.fs.String(name, def, f.usage(env, usage))
}

// Secret registers a string flag that holds a secret (a token, API keys).
// Its value, from the environment or the command line, is never shown: the
// usage text that -h and a flag error print shows no default for it. (Under
// Nomad the secrets arrive in the environment, and a mistyped flag prints
// the usage into the task's log.)
func (f *Flags) Secret(name, env, usage string) *string {
	v := new(string)
	if e, ok := os.LookupEnv(env); ok {
		*v = e
	}
	f.fs.Var((*secretValue)(v), name, f.usage(env, usage))
	return v
}

// secretValue is a string flag.Value whose String is always empty, which is
// what the flag package prints as its default.
type secretValue string

func (s *secretValue) Set(v string) error { *s = secretValue(v); return nil }
func (s *secretValue) String() string     { return "" }

// Int registers an int flag.
func (f *Flags) Int(name, env string, def int, usage string) *int {
	if v, ok := os.LookupEnv(env); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: not an integer", env, v))
		} else {
			def = n
		}
	}
	return f.fs.Int(name, def, f.usage(env, usage))
}

// Bool registers a bool flag.
func (f *Flags) Bool(name, env string, def bool, usage string) *bool {
	if v, ok := os.LookupEnv(env); ok {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: not a boolean", env, v))
		} else {
			def = b
		}
	}
	return f.fs.Bool(name, def, f.usage(env, usage))
}

// Duration registers a duration flag ("30s", "2m"); a negative value is
// refused.
func (f *Flags) Duration(name, env string, def time.Duration, usage string) *time.Duration {
	p := new(time.Duration)
	f.durationVar(p, name, env, def, usage)
	return p
}

// SignedDuration registers a duration flag whose negative values mean
// something (its usage says what).
func (f *Flags) SignedDuration(name, env string, def time.Duration, usage string) *time.Duration {
	p := new(time.Duration)
	f.signedDurationVar(p, name, env, def, usage)
	return p
}

// durationVar is Duration, storing the value in p.
func (f *Flags) durationVar(p *time.Duration, name, env string, def time.Duration, usage string) {
	f.signedDurationVar(p, name, env, def, usage)
	f.checks = append(f.checks, func() error {
		if *p < 0 {
			return fmt.Errorf("-%s (%s) %s: must not be negative", name, env, *p)
		}
		return nil
	})
}

// signedDurationVar is SignedDuration, storing the value in p.
func (f *Flags) signedDurationVar(p *time.Duration, name, env string, def time.Duration, usage string) {
	if v, ok := os.LookupEnv(env); ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: not a duration", env, v))
		} else {
			def = d
		}
	}
	f.fs.DurationVar(p, name, def, f.usage(env, usage))
}

// Parse parses args; a bad environment value is an error too. -h prints
// the usage and -version the version, and both exit 0.
func (f *Flags) Parse(args []string) error {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		return err
	}
	if *f.version {
		fmt.Println(f.fs.Name(), Version)
		os.Exit(0)
	}
	if len(f.errs) > 0 {
		return f.errs[0]
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", f.fs.Args())
	}
	for _, check := range f.checks {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// LogFlags are a service's -log-level and -log-json.
type LogFlags struct {
	level *string
	json  *bool
}

// Log registers -log-level (SLM_LOG_LEVEL) and -log-json (SLM_LOG_JSON);
// Parse refuses a level hclog does not know.
func (f *Flags) Log() *LogFlags {
	l := &LogFlags{
		level: f.String("log-level", "SLM_LOG_LEVEL", "info", "log level: trace, debug, info, warn, error"),
		json:  f.Bool("log-json", "SLM_LOG_JSON", false, "log JSON lines"),
	}
	f.checks = append(f.checks, func() error {
		if hclog.LevelFromString(*l.level) == hclog.NoLevel {
			return fmt.Errorf("-log-level (SLM_LOG_LEVEL) %q: want trace, debug, info, warn or error", *l.level)
		}
		return nil
	})
	return l
}

// Logger returns the service's logger as the flags set it.
func (l *LogFlags) Logger(name string) hclog.Logger { return Logger(name, *l.level, *l.json) }

// ParseTool parses the flags of a developer tool (tools/...), which reports
// to fs's output and exits with a code instead of calling os.Exit: -h prints
// "usage: " + usage and the flags (0), a bad flag or a leftover argument
// is 2. ok is false when the tool should stop with code.
func ParseTool(fs *flag.FlagSet, args []string, usage string) (code int, ok bool) {
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage:", usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}

// SplitList splits a comma-separated flag value and drops empty entries.
func SplitList(list string) []string {
	var out []string
	for _, v := range strings.Split(list, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Logger returns the service's logger: level from the flag value ("info",
// "debug", ...), JSON lines when json is set (for log shippers under Nomad).
func Logger(name, level string, json bool) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      hclog.LevelFromString(level),
		JSONFormat: json,
		Output:     os.Stderr,
		TimeFormat: "2006-01-02T15:04:05.000Z0700",
	})
}

// SignalContext is cancelled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
