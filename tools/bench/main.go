// Command bench drives OpenAI-compatible chat endpoints with a fixed
// workload and prints what it measured as Markdown tables (see
// docs/PERFORMANCE.md, "How to measure"):
//
//	go run ./tools/bench -a http://127.0.0.1:3111 -pid $(pgrep -d, -x inference)
//	go run ./tools/bench -a http://127.0.0.1:3111 -b http://127.0.0.1:11434   # A B A B, ratio B/A
//	go run ./tools/bench -mesh .cache/models/gemma3-270m-random.gguf -threads 2
//	go run ./tools/bench -a http://127.0.0.1:3111 -single "What color is apple?"
//	go run ./tools/bench -a rpc://127.0.0.1:7003 -b http://127.0.0.1:3111   # inference alone vs the mesh
//	go run ./tools/bench -a http://127.0.0.1:11434 -model slm-anchor -mesh MODEL.gguf -mesh-as b   # ollama vs the mesh
//	go run ./tools/bench -conversation -mesh MODEL.gguf -compare reuse     # multi-turn, prompt reuse on (A) vs off (B)
//	go run ./tools/bench -conversation -conversations 16 -think-time 3s -mesh MODEL.gguf -compare routing   # 2 instances, prefix (A) vs least-busy (B)
//
// Rows are prompt length × concurrency; each request streams, so time to
// first token is seen from the client. Token counts come from the server's
// usage. With -conversation the workload is multi-turn chat instead (see
// bench.ConversationPlan): rows are turns, and the cache-hit ratio comes
// from usage.prompt_tokens_details.cached_tokens.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/bench"
	"github.com/slm-mesh/slm-mesh/internal/cli"
	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	f := cli.New("bench")
	fs := f.Set()
	urlA := f.String("a", "SLM_BENCH_URL", "http://127.0.0.1:3111", "endpoint A: the base URL of an OpenAI-compatible API, or rpc://host:port of an inference instance called directly")
	urlB := f.String("b", "SLM_BENCH_URL_B", "", "endpoint B, measured alternately with A (A B A B per row); the ratio B/A is printed")
	modelA := f.String("model", "SLM_BENCH_MODEL_NAME", "", `"model" sent to A (empty: the first of GET /v1/models)`)
	modelB := f.String("model-b", "SLM_BENCH_MODEL_NAME_B", "", `"model" sent to B (empty: the first of GET /v1/models)`)
	apiKey := f.String("api-key", "SLM_BENCH_API_KEY", "", "bearer token for both endpoints")
	pidA := fs.String("pid", "", "comma-separated pids of A's server processes: their RSS and peak RSS (VmHWM) are summed")
	pidB := fs.String("pid-b", "", "comma-separated pids of B's server processes")
	prompts := fs.String("prompts", "32,128,512", "prompt lengths in tokens (approximate; the table shows what the server counted)")
	concs := fs.String("concurrency", "1,2,4,8,16", "concurrency levels")
	maxTokens := fs.Int("max-tokens", 128, "max_tokens of every request")
	requests := fs.Int("requests", 0, "requests per level and round (0: twice the concurrency, at least 8)")
	duration := fs.Duration("duration", 0, "run each level for this long instead of a number of requests")
	warmup := fs.Int("warmup", 1, "unmeasured requests per endpoint first")
	rounds := fs.Int("rounds", 0, "rounds per row (0: 1 with one endpoint, 2 with two)")
	seed := fs.Int("seed", 1, "base of the per-request seeds")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound of one request")
	maxTime := fs.Duration("max-time", 2*time.Hour, "bound of the whole run")
	noCalibrate := fs.Bool("no-calibrate", false, "take one word per token instead of sizing prompts on A")
	single := fs.String("single", "", `send this one prompt (e.g. "What color is apple?") end to end and report the wall time`)
	mesh := fs.String("mesh", "", "start a local mesh (binaries from make build) on this GGUF model and measure its gateway as A (or B, see -mesh-as)")
	meshAs := fs.String("mesh-as", "a", `with -mesh: the endpoint the mesh is, "a" or "b" (then -a is the other one, e.g. an anchor)`)
	threads := f.Int("threads", "SLM_THREADS", 0, "with -mesh: llama.cpp threads (0: the inference service's default, the CPUs but one)")
	parallel := f.Int("parallel", "SLM_PARALLEL", 0, "with -mesh: sequences decoded together (0: the inference default)")
	ctxLen := f.Int("ctx", "SLM_CTX", 0, "with -mesh: context per request in tokens (0: the inference default)")
	meshLogs := fs.String("mesh-log-dir", "", "with -mesh: where the services' logs go (default: a temporary directory)")
	temperature := fs.Float64("temperature", 1, "temperature of every request; random-weight models need 1 (greedy loops are cut short by some servers)")
	conversation := fs.Bool("conversation", false, "multi-turn workload: each conversation re-sends its whole history every turn; TTFT per turn and cache hits (max_tokens: 64 unless -max-tokens is set)")
	systemWords := fs.Int("system-words", 300, "with -conversation: words (about tokens) of the system prompt every conversation shares")
	turns := fs.Int("turns", 10, "with -conversation: turns per conversation")
	turnWords := fs.Int("turn-words", 100, "with -conversation: words of each user message")
	conversations := fs.Int("conversations", 1, "with -conversation: conversations at once per endpoint")
	thinkTime := fs.Duration("think-time", 0, "with -conversation: each turn waits a random time up to this first, as a user would, so that conversations drift out of step")
	compare := fs.String("compare", "", `with -mesh: start two meshes and measure them alternately: "reuse" (A: prompt reuse on, B: -no-prompt-cache) or "routing" (two inference instances each; A: -routing prefix, B: least-busy)`)
	if err := f.Parse(args); err != nil {
		return err
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *maxTime)
	defer cancel()

	plan := bench.Plan{
		MaxTokens: *maxTokens, Temperature: *temperature, Seed: int64(*seed),
		Requests: *requests, Duration: *duration, Warmup: *warmup, Rounds: *rounds,
		NoCalibrate: *noCalibrate,
	}
	var err error
	if plan.Prompts, err = ints(*prompts); err != nil {
		return fmt.Errorf("-prompts: %w", err)
	}
	if plan.Concurrency, err = ints(*concs); err != nil {
		return fmt.Errorf("-concurrency: %w", err)
	}
	conns := 16
	for _, c := range plan.Concurrency {
		conns = max(conns, c)
	}
	newClient := func(url, model string) *bench.Client {
		return &bench.Client{BaseURL: url, APIKey: *apiKey, Model: model, Timeout: *timeout, HTTP: bench.NewHTTPClient(conns)}
	}

	a := bench.Endpoint{Name: "A", Client: newClient(*urlA, *modelA)}
	if a.PIDs, err = ints(*pidA); err != nil {
		return fmt.Errorf("-pid: %w", err)
	}
	if *meshAs != "a" && *meshAs != "b" {
		return fmt.Errorf("-mesh-as %q: want a or b", *meshAs)
	}
	var meshURL string
	var meshPID int
	var compared []bench.Endpoint
	switch {
	case *compare != "" && *mesh == "":
		return errors.New("-compare needs -mesh")
	case *compare != "":
		variants, ok := comparisons[*compare]
		if !ok {
			return fmt.Errorf("-compare %q: want reuse or routing", *compare)
		}
		for _, v := range variants {
			m, err := startMesh(ctx, meshOptions{model: *mesh, threads: *threads, parallel: *parallel, ctx: *ctxLen, apiKey: *apiKey, logDir: *meshLogs,
				inference: v.inference, extra: v.args})
			if err != nil {
				return err
			}
			defer func() {
				report(m, v.inference)
				m.Stop()
			}()
			var pids []int
			for i := range v.inference {
				pids = append(pids, m.Proc(localmesh.InferenceName(i)).Pid())
			}
			compared = append(compared, bench.Endpoint{Name: v.name, Client: newClient(m.URL(), ""), PIDs: pids})
		}
	case *mesh != "":
		m, err := startMesh(ctx, meshOptions{model: *mesh, threads: *threads, parallel: *parallel, ctx: *ctxLen, apiKey: *apiKey, logDir: *meshLogs, inference: 1})
		if err != nil {
			return err
		}
		defer func() {
			report(m, 1)
			m.Stop()
		}()
		meshURL, meshPID = m.URL(), m.Proc(localmesh.InferenceName(0)).Pid()
		if *meshAs == "a" {
			a.Client.BaseURL, a.PIDs = meshURL, []int{meshPID}
		}
	}

	if *single != "" {
		mt := 100 // the original system's request
		fs.Visit(func(fl *flag.Flag) {
			if fl.Name == "max-tokens" {
				mt = *maxTokens
			}
		})
		return bench.Single(ctx, os.Stdout, a.Client, *single, mt, *temperature, int64(*seed))
	}

	eps := []bench.Endpoint{a}
	if compared != nil {
		eps = compared
	} else if *urlB != "" || (meshURL != "" && *meshAs == "b") {
		b := bench.Endpoint{Name: "B", Client: newClient(*urlB, *modelB)}
		if b.PIDs, err = ints(*pidB); err != nil {
			return fmt.Errorf("-pid-b: %w", err)
		}
		if meshURL != "" && *meshAs == "b" {
			b.Client.BaseURL, b.PIDs = meshURL, []int{meshPID}
		}
		eps = append(eps, b)
	}
	fmt.Printf("command: bench %s\n", strings.Join(args, " "))
	fmt.Printf("date: %s\n", time.Now().UTC().Format(time.RFC3339))
	if *conversation {
		cp := bench.ConversationPlan{
			SystemWords: *systemWords, Turns: *turns, TurnWords: *turnWords, MaxTokens: 64,
			Conversations: *conversations, Rounds: *rounds, ThinkTime: *thinkTime, Temperature: *temperature, Seed: int64(*seed),
		}
		fs.Visit(func(fl *flag.Flag) {
			if fl.Name == "max-tokens" {
				cp.MaxTokens = *maxTokens
			}
		})
		fmt.Printf("machine: %s; load average at start %.2f\n", bench.Machine(), bench.LoadAverage())
		_, err = bench.RunConversations(ctx, os.Stdout, os.Stderr, cp, eps)
		fmt.Printf("load average at end %.2f\n", bench.LoadAverage())
	} else {
		_, err = bench.Run(ctx, os.Stdout, os.Stderr, plan, eps)
	}
	if errors.Is(err, context.Canceled) {
		return errors.New("interrupted; the tables above hold what was measured")
	}
	return err
}

// comparisons are the pairs of meshes -compare starts: name → A, B.
var comparisons = map[string][]meshVariant{
	"reuse": {
		{name: "reuse", inference: 1},
		{name: "no-reuse", inference: 1, args: map[string][]string{"inference": {"-no-prompt-cache"}}},
	},
	"routing": {
		{name: "prefix", inference: 2, args: map[string][]string{"caller": {"-routing", "prefix"}}},
		{name: "least-busy", inference: 2, args: map[string][]string{"caller": {"-routing", "least-busy"}}},
	},
}

// meshVariant is one mesh of a -compare pair.
type meshVariant struct {
	name      string
	inference int
	args      map[string][]string
}

// meshOptions say how to start a local mesh.
type meshOptions struct {
	model             string
	threads, parallel int
	ctx               int
	apiKey, logDir    string
	inference         int
	extra             map[string][]string
}

// startMesh runs gateway → caller → inference instances on free loopback
// ports.
func startMesh(ctx context.Context, o meshOptions) (*localmesh.Mesh, error) {
	root := modeltest.RepoRoot()
	binDir := filepath.Join(root, ".cache", "bin")
	for _, b := range []string{"gateway", "caller", "inference"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return nil, fmt.Errorf("-mesh needs the service binaries in %s: run `make build` first", binDir)
		}
	}
	abs, err := filepath.Abs(o.model)
	if err != nil {
		return nil, err
	}
	gateway, caller, inference, err := localmesh.FreePorts(o.inference)
	if err != nil {
		return nil, err
	}
	logDir := o.logDir
	if logDir != "" && o.extra != nil {
		// Two meshes: one directory each.
		logDir = filepath.Join(logDir, strconv.Itoa(gateway))
	}
	fmt.Fprintf(os.Stderr, "bench: starting a local mesh on %s (%d inference, extra arguments %v)\n", abs, o.inference, o.extra)
	return localmesh.Start(ctx, localmesh.Config{
		BinDir: binDir, Model: abs, Inference: o.inference,
		GatewayAddr: "127.0.0.1:" + strconv.Itoa(gateway), CallerPort: caller, InferencePort: inference,
		Threads: o.threads, Parallel: o.parallel, Ctx: o.ctx, APIKeys: o.apiKey, Dir: logDir, ExtraArgs: o.extra,
		ReadyTimeout: 5 * time.Minute,
	})
}

// report prints the peak memory of every mesh process before it stops.
func report(m *localmesh.Mesh, inference int) {
	names := []string{"caller", "gateway"}
	for i := range inference {
		names = append(names, localmesh.InferenceName(i))
	}
	for _, name := range names {
		p := m.Proc(name)
		if p == nil || p.Pid() == 0 {
			continue
		}
		if mem, err := bench.ReadMemory(p.Pid()); err == nil {
			fmt.Printf("mesh %s: peak RSS %.0f MB\n", name, float64(mem.Peak)/(1<<20))
		}
	}
	fmt.Fprintf(os.Stderr, "bench: mesh logs in %s\n", m.Dir())
}

func ints(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}
