// Command local runs the whole slm-mesh on this machine: it builds the three
// services, starts a Consul dev agent when one is built (else static
// discovery), starts inference, caller and gateway as separate processes on
// loopback, waits until a request can go all the way through, and prints how
// to call it. Ctrl-C stops everything.
//
//	go run ./tools/local                      # the default model (downloaded once)
//	SLM_MODEL=/path/model.gguf go run ./tools/local
//	go run ./tools/local -inference 2         # two inference instances
//	SLM_MODELS=a.gguf,b.gguf go run ./tools/local   # two models, one instance each
//	go run ./tools/local -model a.gguf -model b.gguf
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/cli"
	"github.com/slm-mesh/slm-mesh/internal/consulagent"
	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/model"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "local:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	f := cli.New("local")
	var modelArgs modelList
	if v, ok := os.LookupEnv("SLM_MODEL"); ok && v != "" {
		modelArgs.env = []string{v}
	}
	f.Set().Var(&modelArgs, "model", "GGUF model: a local path or an https URL (default: "+model.DefaultName+", downloaded once); repeat it for several models, one inference instance each (env SLM_MODEL)")
	modelList := f.String("models", "SLM_MODELS", "", "several GGUF models, comma-separated, one inference instance each; added to -model")
	modelSHA := f.String("model-sha256", "SLM_MODEL_SHA256", "", "sha256 of a model URL (with one model)")
	addr := f.String("addr", "SLM_GATEWAY_ADDR", "127.0.0.1:3111", "address of the public API")
	callerPort := f.Int("caller-port", "SLM_CALLER_PORT", 7002, "loopback port of the caller")
	inferencePort := f.Int("inference-port", "SLM_INFERENCE_PORT", 7003, "loopback port of the first inference instance (the next ones count up)")
	instances := f.Int("inference", "SLM_INFERENCE_COUNT", 1, "number of inference instances")
	threads := f.Int("threads", "SLM_THREADS", 0, "llama.cpp threads per inference instance (0: the service's default, the CPUs but one)")
	parallel := f.Int("parallel", "SLM_PARALLEL", 0, "sequences each inference instance decodes together (0: its default)")
	ctxLen := f.Int("ctx", "SLM_CTX", 0, "context per request in tokens (0: the inference default)")
	apiKeys := f.Secret("api-keys", "SLM_API_KEYS", "comma-separated API keys the gateway requires (empty: none)")
	token := f.Secret("rpc-token", "SLM_RPC_TOKEN", "shared RPC token between the services (empty: none)")
	consul := f.String("consul", "SLM_LOCAL_CONSUL", "auto", "discovery through a Consul dev agent: auto (when built), on, off")
	logDir := f.String("log-dir", "SLM_LOG_DIR", "", "directory for each service's log file (default: a temporary one)")
	noBuild := f.Bool("no-build", "SLM_NO_BUILD", false, "use the binaries in .cache/bin as they are")
	if err := f.Parse(args); err != nil {
		return err
	}
	ctx, stop := cli.SignalContext()
	defer stop()

	root := modeltest.RepoRoot()
	binDir := filepath.Join(root, ".cache", "bin")
	if !*noBuild {
		say("building the services into %s", binDir)
		if err := localmesh.Build(ctx, root, binDir, os.Stderr); err != nil {
			return err
		}
	}

	refs := slices.Compact(append(modelArgs.list(), cli.SplitList(*modelList)...))
	if len(refs) == 0 {
		refs = []string{""} // the default model
	}
	var paths []string
	for _, ref := range refs {
		sha := *modelSHA
		if len(refs) > 1 {
			sha = ""
		}
		p, err := resolveModel(ctx, ref, sha)
		if err != nil {
			return err
		}
		paths = append(paths, p)
	}

	cfg := localmesh.Config{
		BinDir: binDir, Model: paths[0], GatewayAddr: *addr,
		CallerPort: *callerPort, InferencePort: *inferencePort, Inference: *instances,
		Threads: *threads, Parallel: *parallel, Ctx: *ctxLen,
		APIKeys: *apiKeys, RPCToken: *token, Dir: *logDir, Output: os.Stdout,
	}
	if len(paths) > 1 {
		cfg.Models, *instances = paths, len(paths)
	}
	if *threads == 0 && *instances > 1 {
		// Each instance would take every CPU but one; llama.cpp's threads
		// spin-wait, so several instances that each take them all run
		// slower than their share. Split the CPUs instead.
		cfg.Threads = threadsEach(runtime.NumCPU(), *instances)
	}
	switch *consul {
	case "on", "auto":
		bin, err := consulagent.FindBinary(root)
		if err != nil && *consul == "on" {
			return err
		}
		if err == nil {
			cfg.ConsulBin = bin
			say("discovery: Consul dev agent (%s)", bin)
		} else {
			say("discovery: static addresses (no Consul agent built; `make consul` builds one)")
		}
	case "off":
		say("discovery: static addresses")
	default:
		return fmt.Errorf("-consul %q: want auto, on or off", *consul)
	}

	say("starting %d inference instance(s) (%d thread(s) each; 0: the default), the caller and the gateway", *instances, cfg.Threads)
	m, err := localmesh.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer m.Stop()

	auth := ""
	if *apiKeys != "" {
		auth = fmt.Sprintf(" -H 'Authorization: Bearer %s'", strings.Split(*apiKeys, ",")[0])
	}
	fmt.Fprintf(os.Stderr, `
slm-mesh is ready.
  API:    %s/v1/chat/completions
  models: %s
  logs:   %s
  health: curl -s %s/health

Try:
  curl -s %s/v1/chat/completions%s -H 'Content-Type: application/json' \
    -d '{"messages":[{"role":"user","content":"What color is an apple?"}],"max_tokens":64}'

Ctrl-C stops the mesh.
`, m.URL(), strings.Join(paths, ", "), m.Dir(), m.URL(), m.URL(), auth)

	select {
	case <-ctx.Done():
		say("stopping")
		return nil
	case p := <-m.Exited():
		return fmt.Errorf("%s stopped unexpectedly (%s); its last lines:\n%s\nstopping the others", p.Name, p.ExitStatus(), p.TailText())
	}
}

// modelList is -model, which may be given more than once; until it is,
// it holds SLM_MODEL.
type modelList struct{ env, flags []string }

func (l *modelList) String() string { return strings.Join(l.list(), ",") }

func (l *modelList) Set(v string) error {
	l.flags = append(l.flags, v)
	return nil
}

// list is the models given: the flags', else SLM_MODEL's.
func (l *modelList) list() []string {
	if len(l.flags) > 0 {
		return l.flags
	}
	return l.env
}

// threadsEach splits the CPUs but one (the gateway's and the caller's)
// between n inference instances, at least one thread each.
func threadsEach(cpus, n int) int { return max(1, (cpus-1)/n) }

// resolveModel returns a local model path: SLM_MODEL as it is when it is a
// file, else the default (or given) URL downloaded once into the cache. A
// download that cannot happen fails fast with what to do instead.
func resolveModel(ctx context.Context, ref, sha string) (string, error) {
	src := model.Source{Ref: ref, SHA256: sha}
	if ref == "" {
		src = model.DefaultSource()
	}
	if !src.IsURL() {
		if _, err := model.Validate(ref); err != nil {
			return "", fmt.Errorf("SLM_MODEL=%s: %w", ref, err)
		}
		return filepath.Abs(ref)
	}
	say("model: %s (downloaded once into the cache)", src.Ref)
	dctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	path, err := model.Fetch(dctx, src, model.FetchOptions{Progress: os.Stderr})
	if err != nil && !errors.Is(err, context.Canceled) {
		return "", fmt.Errorf(`could not get the model: %w

Point the mesh at a local GGUF file instead:
  SLM_MODEL=/path/to/model.gguf make run
or generate a small random-weight test model:
  go run ./tools/gguf -preset tiny -o /tmp/tiny.gguf && SLM_MODEL=/tmp/tiny.gguf make run`, err)
	}
	return path, err
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "local: "+format+"\n", args...)
}
