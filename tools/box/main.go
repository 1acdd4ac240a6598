// Command box runs the production cluster on this machine, in network
// namespaces (internal/clusterbox): three Nomad/Consul servers and clients
// for each role, with the agent configuration Terraform renders, the
// services released to the AWS emulator's S3 and the jobs submitted with
// production variables.
//
//	go run ./tools/box up [-no-deploy] [-model PATH] [-dir DIR]   bring it up, deploy, ask the API once
//	go run ./tools/box deploy [-model PATH] [-dir DIR]            release, submit and ask again on a running box
//	go run ./tools/box status [-dir DIR]                          hosts, agents, Nomad nodes and jobs
//	go run ./tools/box env [-dir DIR]                             NOMAD_* for the nomad CLI (operator token)
//	go run ./tools/box down [-dir DIR]                            stop and remove everything it made
//
// It needs root, iproute2, iptables, jq, curl, moto_server, the aws CLI and
// the agents and OpenTofu built into .cache/bin (make nomad consul iac).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/cli"
	"github.com/slm-mesh/slm-mesh/internal/clusterbox"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = "go run ./tools/box up|deploy|status|env|down [-dir DIR] [-no-deploy] [-model PATH]"

// run is main without the process: it returns the exit code (0 success,
// 1 failure, 2 usage).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage:", usage)
		return 2
	}
	command := args[0]
	fs := flag.NewFlagSet("box "+command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "the box's state directory (default .cache/box)")
	noDeploy := fs.Bool("no-deploy", false, "up: only the cluster, no release, jobs or request")
	model := fs.String("model", "", "up: the GGUF model to serve (default: stories260K, $"+modeltest.StoriesEnv+" or ../shared/models)")
	if code, ok := cli.ParseTool(fs, args[1:], usage); !ok {
		return code
	}
	cfg := clusterbox.Config{Root: modeltest.RepoRoot(), Dir: *dir, Log: stdout}
	var err error
	switch command {
	case "up":
		err = up(ctx, cfg, *noDeploy, *model, stdout)
	case "deploy":
		var b *clusterbox.Box
		if b, err = clusterbox.Open(cfg); err == nil {
			err = deploy(ctx, b, modelPath(*model), stdout)
		}
	case "down":
		err = clusterbox.Down(ctx, cfg)
	case "status", "env":
		var b *clusterbox.Box
		if b, err = clusterbox.Open(cfg); err == nil {
			if command == "status" {
				err = b.Status(ctx, stdout)
			} else {
				for _, kv := range b.NomadEnv(b.OperatorToken()) {
					fmt.Fprintf(stdout, "export %s\n", kv)
				}
			}
		}
	default:
		fmt.Fprintf(stderr, "box: unknown command %q\nusage: %s\n", command, usage)
		return 2
	}
	if errors.Is(err, os.ErrNotExist) && command != "up" {
		err = errors.New("no box is up (no state file)")
	}
	if err != nil {
		fmt.Fprintln(stderr, "box:", err)
		return 1
	}
	return 0
}

// up brings the box up and, unless told not to, deploys the services and
// asks every gateway for a chat completion.
func up(ctx context.Context, cfg clusterbox.Config, noDeploy bool, model string, out io.Writer) error {
	start := time.Now()
	model = modelPath(model)
	if _, err := os.Stat(model); !noDeploy && err != nil {
		return fmt.Errorf("model: %w (-model PATH or $%s)", err, modeltest.StoriesEnv)
	}
	b, err := clusterbox.Up(ctx, cfg)
	if err != nil {
		if b != nil {
			err = fmt.Errorf("%w\n(logs under %s/hosts/*/log; `go run ./tools/box down` removes the box)", err, b.Dir())
		}
		return err
	}
	if !noDeploy {
		if err := deploy(ctx, b, model, out); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "the box is up (%s); `go run ./tools/box env` prints NOMAD_* for the operator token, `go run ./tools/box down` removes it\n", time.Since(start).Round(time.Second))
	return nil
}

// modelPath is the model to serve: the flag, else the tests' stories260K.
func modelPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if p := os.Getenv(modeltest.StoriesEnv); p != "" {
		return p
	}
	return filepath.Join(modeltest.RepoRoot(), "..", "shared", "models", "stories260K.gguf")
}

// deploy releases and submits the services, then asks every gateway for a
// chat completion.
func deploy(ctx context.Context, b *clusterbox.Box, model string, out io.Writer) error {
	if err := b.Deploy(ctx, model); err != nil {
		return err
	}
	urls, err := b.GatewayURLs(ctx)
	if err != nil {
		return err
	}
	if len(urls) == 0 {
		return errors.New("no gateway runs")
	}
	for _, u := range urls {
		text, err := b.Chat(ctx, u, "Once upon a time")
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s answers: %q\n", u, text)
	}
	return nil
}
