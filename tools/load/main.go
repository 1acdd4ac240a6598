// Command load puts a gateway under load with many concurrent OpenAI
// clients, checks every response, compares the services' memory,
// goroutines, descriptors and threads before and after, and exits non-zero
// when anything was wrong (see docs/RELIABILITY.md, "Load"):
//
//	SLM_MODEL=/path/to/stories260K.gguf go run ./tools/load -mesh -threads 1 -clients 64 -duration 60s
//	go run ./tools/load -url http://127.0.0.1:3111 -pids gateway=$(pgrep -x gateway) -metrics gateway=127.0.0.1:3111
//
// With -mesh it builds the services, starts the whole mesh on free loopback
// ports (internal/localmesh) and watches every process; with -url it loads
// a running gateway and watches the processes named in -pids and -metrics.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/bench"
	"github.com/slm-mesh/slm-mesh/internal/cli"
	"github.com/slm-mesh/slm-mesh/internal/load"
	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// errFailed is a run that completed with a FAIL verdict.
var errFailed = errors.New("verdict: FAIL")

func main() {
	err := run(os.Args[1:])
	switch {
	case errors.Is(err, errFailed):
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	f := cli.New("load")
	fs := f.Set()
	url := f.String("url", "SLM_LOAD_URL", "", "base URL of a running gateway (loopback only), e.g. http://127.0.0.1:3111")
	mesh := fs.Bool("mesh", false, "build the services and start the whole mesh on free loopback ports instead of -url")
	apiKey := f.Secret("api-key", "SLM_LOAD_API_KEY", "bearer token sent to the gateway (with -mesh: the gateway requires it)")
	pids := fs.String("pids", "", "with -url: processes to watch in /proc, name=pid,...")
	metrics := fs.String("metrics", "", "with -url: where each process serves /metrics (its goroutines), name=host:port,...")

	clients := fs.Int("clients", 16, "concurrent clients")
	duration := fs.Duration("duration", 30*time.Second, "how long requests are started")
	maxRequests := fs.Int("max-requests", 100_000, "bound on the requests started")
	timeout := fs.Duration("timeout", time.Minute, "bound of one request; a request still unanswered then is counted as hung")
	prompts := fs.Int("prompts", 8, "distinct prompts")
	maxTokens := fs.String("max-tokens", "8,48,160", "max_tokens values each prompt is asked with")
	seed := fs.Uint64("seed", 1, "seed of the clients' request sequences")
	settle := fs.Duration("settle", 5*time.Second, "wait after the load before reading the processes again")

	lim := load.DefaultLimits()
	fs.IntVar(&lim.Goroutines, "max-goroutine-growth", lim.Goroutines, "goroutines a process may gain over the run")
	fs.IntVar(&lim.FDs, "max-fd-growth", lim.FDs, "open descriptors a process may gain over the run")
	fs.Float64Var(&lim.RSSPercent, "max-rss-growth-pct", lim.RSSPercent, "RSS growth allowed, percent of RSS before (added to -max-rss-growth-mb)")
	rssMB := fs.Int64("max-rss-growth-mb", lim.RSSBytes>>20, "RSS growth allowed, MiB (added to -max-rss-growth-pct)")

	model := f.String("model", "SLM_MODEL", "", "with -mesh: the GGUF model file")
	threads := f.Int("threads", "SLM_THREADS", 0, "with -mesh: llama.cpp threads (0: the inference service's default, the CPUs but one)")
	parallel := f.Int("parallel", "SLM_PARALLEL", 0, "with -mesh: sequences decoded together (0: the inference default)")
	queue := f.Int("queue", "SLM_QUEUE", 0, "with -mesh: requests waiting for a slot before 429 (0: the inference default)")
	ctxLen := f.Int("ctx", "SLM_CTX", 0, "with -mesh: context per request in tokens (0: the inference default)")
	noBuild := f.Bool("no-build", "SLM_NO_BUILD", false, "with -mesh: use the binaries in .cache/bin as they are")
	logDir := fs.String("log-dir", "", "with -mesh: where the services' logs go (default: a temporary directory)")
	if err := f.Parse(args); err != nil {
		return err
	}
	lim.RSSBytes = *rssMB << 20
	if *prompts <= 0 || *clients <= 0 {
		return errors.New("-prompts and -clients must be positive")
	}
	mts, err := positiveInts(*maxTokens)
	if err != nil {
		return fmt.Errorf("-max-tokens: %w", err)
	}
	ctx, stop := cli.SignalContext()
	defer stop()

	var procs []load.Proc
	switch {
	case *mesh && (*url != "" || *pids != "" || *metrics != ""):
		return errors.New("-mesh starts and watches its own mesh: -url, -pids and -metrics go without it")
	case *mesh:
		if *model == "" {
			return errors.New("-mesh needs -model (or SLM_MODEL): a GGUF file")
		}
		m, err := startMesh(ctx, localmesh.Config{
			Model: *model, Threads: *threads, Parallel: *parallel, Queue: *queue, Ctx: *ctxLen,
			APIKeys: *apiKey, Dir: *logDir,
		}, *noBuild)
		if err != nil {
			return err
		}
		defer m.Stop()
		// localmesh's readiness probe left a keep-alive connection to the
		// gateway, which would count among its descriptors before the run.
		http.DefaultClient.CloseIdleConnections()
		fmt.Fprintf(os.Stderr, "load: mesh logs in %s\n", m.Dir())
		*url = m.URL()
		for _, name := range []string{"gateway", "caller", localmesh.InferenceName(0)} {
			procs = append(procs, load.Proc{Name: name, PID: m.Proc(name).Pid(), MetricsAddr: m.Addr(name)})
		}
	case *url == "":
		return errors.New("give -url of a running gateway, or -mesh")
	default:
		if procs, err = parseProcs(*pids, *metrics); err != nil {
			return err
		}
	}

	cfg := load.Config{
		Client:  &load.Client{BaseURL: *url, APIKey: *apiKey, Timeout: *timeout, HTTP: bench.NewHTTPClient(*clients)},
		Clients: *clients, Duration: *duration, MaxRequests: *maxRequests,
		Prompts: load.Prompts(*prompts), MaxTokens: mts, Seed: *seed, Settle: *settle,
		Procs: procs, Limits: lim, Progress: os.Stderr,
	}
	rep, err := load.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("command: load %s\n", strings.Join(args, " "))
	fmt.Printf("date: %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("machine: %s\n", bench.Machine())
	fmt.Printf("gateway: %s\n\n", *url)
	if err := rep.Write(os.Stdout); err != nil {
		return err
	}
	if !rep.Passed() {
		return errFailed
	}
	return nil
}

// startMesh builds the services into .cache/bin (unless noBuild) and starts
// gateway, caller and one inference instance on free loopback ports.
func startMesh(ctx context.Context, cfg localmesh.Config, noBuild bool) (*localmesh.Mesh, error) {
	root := modeltest.RepoRoot()
	cfg.BinDir = filepath.Join(root, ".cache", "bin")
	if !noBuild {
		fmt.Fprintf(os.Stderr, "load: building the services into %s\n", cfg.BinDir)
		if err := localmesh.Build(ctx, root, cfg.BinDir, os.Stderr); err != nil {
			return nil, err
		}
	}
	abs, err := filepath.Abs(cfg.Model)
	if err != nil {
		return nil, err
	}
	cfg.Model = abs
	var ports [3]int
	for i := range ports {
		if ports[i], err = localmesh.FreePort(); err != nil {
			return nil, err
		}
	}
	cfg.GatewayAddr = "127.0.0.1:" + strconv.Itoa(ports[0])
	cfg.CallerPort, cfg.InferencePort = ports[1], ports[2]
	cfg.ReadyTimeout = 5 * time.Minute
	fmt.Fprintf(os.Stderr, "load: starting a local mesh on %s\n", abs)
	return localmesh.Start(ctx, cfg)
}

// parseProcs merges "name=pid,..." and "name=host:port,..." into the
// processes to watch, in the order their names first appear.
func parseProcs(pids, metrics string) ([]load.Proc, error) {
	var procs []load.Proc
	find := func(name string) *load.Proc {
		for i := range procs {
			if procs[i].Name == name {
				return &procs[i]
			}
		}
		procs = append(procs, load.Proc{Name: name})
		return &procs[len(procs)-1]
	}
	for _, kv := range cli.SplitList(pids) {
		name, v, ok := strings.Cut(kv, "=")
		pid, err := strconv.Atoi(v)
		if !ok || name == "" || err != nil || pid <= 0 {
			return nil, fmt.Errorf("-pids: %q is not name=pid", kv)
		}
		find(name).PID = pid
	}
	for _, kv := range cli.SplitList(metrics) {
		name, addr, ok := strings.Cut(kv, "=")
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("-metrics: %q is not name=host:port", kv)
		}
		find(name).MetricsAddr = addr
	}
	return procs, nil
}

func positiveInts(s string) ([]int, error) {
	var out []int
	for _, f := range cli.SplitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}
