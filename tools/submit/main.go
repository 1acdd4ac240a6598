// Command submit puts a version of slm-mesh on a Nomad cluster: it renders
// the embedded job templates (package jobs) with the operator's variables,
// has the Nomad server parse them, registers them in dependency order
// (inference, caller, gateway) and waits until each deployment is healthy.
//
//	go run ./tools/submit [render|plan|run|status|stop [-purge]] [-job NAME] [-var k=v]... [-var-file F]
//
// The command defaults to run. Nomad is reached as the nomad CLI does:
// NOMAD_ADDR, NOMAD_TOKEN, NOMAD_REGION, NOMAD_NAMESPACE, NOMAD_CACERT and
// the other NOMAD_* variables (api.DefaultConfig), which the -address,
// -region and -namespace flags override.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/slm-mesh/slm-mesh/internal/cli"
	"github.com/slm-mesh/slm-mesh/jobs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// commands maps each command to what it does; run is the default.
var commands = map[string]func(*Submitter, context.Context, []*jobs.Rendered) error{
	"render": (*Submitter).Render,
	"plan":   (*Submitter).Plan,
	"run":    (*Submitter).Run,
	"status": (*Submitter).Status,
	"stop":   (*Submitter).Stop,
}

// pollInterval is the least time between two reads of a deployment when
// the server does not block (tests shorten it).
var pollInterval = 2 * time.Second

// listFlag collects a repeated string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// run is main without the process: it returns the exit code (0 success,
// 1 failure, 2 usage, 130 interrupted as a shell reports Ctrl-C).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	command := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		command, args = args[0], args[1:]
	}
	do, ok := commands[command]
	if !ok {
		fmt.Fprintf(stderr, "submit: unknown command %q (want render, plan, run, status or stop)\n", command)
		return 2
	}

	fs := flag.NewFlagSet("submit "+command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var vars, varFiles, only listFlag
	fs.Var(&vars, "var", "set a job variable, name=value (repeatable; wins over -var-file)")
	fs.Var(&varFiles, "var-file", "HCL file of job variables, name = value lines (repeatable; jobs/local.vars.hcl for a dev agent)")
	fs.Var(&only, "job", "act on this job only: gateway, caller or inference (repeatable; default all)")
	address := fs.String("address", "", "Nomad HTTP API address (default: NOMAD_ADDR or http://127.0.0.1:4646)")
	region := fs.String("region", "", "Nomad region for the API calls (default: NOMAD_REGION)")
	namespace := fs.String("namespace", "", "Nomad namespace (default: NOMAD_NAMESPACE)")
	purge := fs.Bool("purge", false, "stop: also purge the jobs from Nomad's state")
	timeout := fs.Duration("timeout", 30*time.Minute, "run: how long to wait for all deployments")
	if code, ok := cli.ParseTool(fs, args, "go run ./tools/submit [render|plan|run|status|stop [-purge]] [flags]"); !ok {
		return code
	}

	rendered, err := renderJobs(only, varFiles, vars)
	if err != nil {
		fmt.Fprintln(stderr, "submit:", err)
		return 1
	}

	cfg := api.DefaultConfig()
	if *address != "" {
		cfg.Address = *address
	}
	if *region != "" {
		cfg.Region = *region
	}
	if *namespace != "" {
		cfg.Namespace = *namespace
	}
	s, err := New(cfg, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "submit:", err)
		return 1
	}
	s.Purge = *purge
	s.Timeout = *timeout
	s.Poll = pollInterval
	s.Scale = scaledGroups(vars)
	if err := do(s, ctx, rendered); err != nil {
		fmt.Fprintln(stderr, "submit:", err)
		if errors.Is(err, ErrInterrupted) {
			return 130
		}
		return 1
	}
	return 0
}

// scaledGroups returns the task groups whose count a -var flag sets
// (caller_count=3 sets group caller's). A count in a -var-file is the
// count a new job starts with; it does not change a running job's.
func scaledGroups(vars []string) map[string]bool {
	groups := map[string]bool{}
	for _, v := range vars {
		name, _, _ := strings.Cut(v, "=")
		if group, ok := strings.CutSuffix(strings.TrimSpace(name), "_count"); ok {
			groups[group] = true
		}
	}
	return groups
}

// renderJobs renders the selected jobs (all when none) with the variables
// files, then the -var flags, applied in order.
func renderJobs(only, varFiles, vars []string) ([]*jobs.Rendered, error) {
	// Whatever order -job flags come in, jobs go in deployment order.
	want := map[string]bool{}
	for _, name := range only {
		j, err := jobs.Lookup(name)
		if err != nil {
			return nil, err
		}
		want[j.Name] = true
	}
	var selected []jobs.Job
	for _, j := range jobs.All {
		if want[j.Name] {
			selected = append(selected, j)
		}
	}
	var values jobs.Values
	for _, path := range varFiles {
		src, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%w: variables file: %v", jobs.ErrBadValue, err)
		}
		if err := values.AddFile(path, src); err != nil {
			return nil, err
		}
	}
	for _, v := range vars {
		if err := values.AddFlag(v); err != nil {
			return nil, err
		}
	}
	return jobs.RenderAll(selected, &values)
}
