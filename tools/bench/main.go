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
//
// Rows are prompt length × concurrency; each request streams, so time to
// first token is seen from the client. Token counts come from the server's
// usage.
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
	meshLogs := fs.String("mesh-log-dir", "", "with -mesh: where the services' logs go (default: a temporary directory)")
	temperature := fs.Float64("temperature", 1, "temperature of every request; random-weight models need 1 (greedy loops are cut short by some servers)")
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
	if *mesh != "" {
		m, err := startMesh(ctx, *mesh, *threads, *parallel, *apiKey, *meshLogs)
		if err != nil {
			return err
		}
		defer func() {
			report(m)
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
	if *urlB != "" || (meshURL != "" && *meshAs == "b") {
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
	_, err = bench.Run(ctx, os.Stdout, os.Stderr, plan, eps)
	if errors.Is(err, context.Canceled) {
		return errors.New("interrupted; the tables above hold what was measured")
	}
	return err
}

// startMesh runs gateway → caller → inference on free loopback ports.
func startMesh(ctx context.Context, modelPath string, threads, parallel int, apiKey, logDir string) (*localmesh.Mesh, error) {
	root := modeltest.RepoRoot()
	binDir := filepath.Join(root, ".cache", "bin")
	for _, b := range []string{"gateway", "caller", "inference"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return nil, fmt.Errorf("-mesh needs the service binaries in %s: run `make build` first", binDir)
		}
	}
	abs, err := filepath.Abs(modelPath)
	if err != nil {
		return nil, err
	}
	var ports [3]int
	for i := range ports {
		if ports[i], err = localmesh.FreePort(); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "bench: starting a local mesh on %s\n", abs)
	return localmesh.Start(ctx, localmesh.Config{
		BinDir: binDir, Model: abs,
		GatewayAddr: "127.0.0.1:" + strconv.Itoa(ports[0]), CallerPort: ports[1], InferencePort: ports[2],
		Threads: threads, Parallel: parallel, APIKeys: apiKey, Dir: logDir,
		ReadyTimeout: 5 * time.Minute,
	})
}

// report prints the peak memory of every mesh process before it stops.
func report(m *localmesh.Mesh) {
	for _, name := range []string{localmesh.InferenceName(0), "caller", "gateway"} {
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
