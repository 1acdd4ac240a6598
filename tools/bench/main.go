// Command bench drives OpenAI-compatible chat endpoints with a fixed
// workload and prints what it measured as Markdown tables (see
// docs/PERFORMANCE.md, "How to measure"). Its commands are the workloads:
//
//	go run ./tools/bench [sweep|conversation|single|embed] [flags]
//
// sweep, the default, measures prompt lengths × concurrency levels, a row
// each; each request streams, so time to first token is seen from the
// client, and token counts come from the server's usage. conversation runs
// multi-turn chats instead (see bench.ConversationPlan): rows are turns,
// and the cache-hit ratio comes from usage.prompt_tokens_details.cached_tokens.
// single sends one prompt end to end and reports the wall time. embed
// times /v1/embeddings requests of many inputs each (see bench.EmbedPlan).
//
//	go run ./tools/bench sweep -a http://127.0.0.1:3111 -pid $(pgrep -d, -x inference)
//	go run ./tools/bench sweep -a http://127.0.0.1:3111 -b http://127.0.0.1:11434   # A B A B, ratio B/A
//	go run ./tools/bench sweep -mesh .cache/models/gemma3-270m-random.gguf -threads 2
//	go run ./tools/bench sweep -a rpc://127.0.0.1:7003 -b http://127.0.0.1:3111   # inference alone vs the mesh
//	go run ./tools/bench sweep -a http://127.0.0.1:11434 -model slm-anchor -mesh MODEL.gguf -mesh-as b   # ollama vs the mesh
//	go run ./tools/bench conversation -mesh MODEL.gguf -compare reuse     # multi-turn, prompt reuse on (A) vs off (B)
//	go run ./tools/bench conversation -conversations 16 -think-time 3s -mesh MODEL.gguf -compare routing   # 2 instances, prefix (A) vs least-busy (B)
//	go run ./tools/bench single -a http://127.0.0.1:3111 -prompt "What color is apple?"
//	go run ./tools/bench embed -a http://127.0.0.1:11434 -model slm-anchor -mesh EMBEDDING-MODEL.gguf -mesh-as b -threads 2
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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

// usage is the command line; -h adds the commands and the flags of one.
const usage = "go run ./tools/bench [sweep|conversation|single|embed] [flags]"

// command is a parsed command line, ready to run.
type command interface {
	// check refuses, after parsing, what the flag types let through.
	check() error
	// run measures; args is the command line, for the report's header.
	run(ctx context.Context, args []string) error
	// maxTime bounds the whole run (-max-time).
	maxTime() time.Duration
}

// workload is a command: its name, what it measures, and the function
// that registers its flags.
type workload struct {
	name, about string
	flags       func(*cli.Flags) command
}

// commands are the workloads; the first is the default.
var commands = []workload{
	{"sweep", "prompt lengths × concurrency levels, a row each (the default)", sweepFlags},
	{"conversation", "multi-turn chats: TTFT per turn and cache hits", conversationFlags},
	{"single", "one prompt end to end: its wall time", singleFlags},
	{"embed", "/v1/embeddings: inputs/s of requests of many inputs", embedFlags},
}

func run(args []string) error {
	cmd, err := parse(args, os.Stderr)
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cmd.maxTime())
	defer cancel()
	return cmd.run(ctx, args)
}

// parse reads a command line: the command (the default if the first
// argument is a flag) and its flags. A flag error and -h print the usage
// on out.
func parse(args []string, out io.Writer) (command, error) {
	name := commands[0].name
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	i := slices.IndexFunc(commands, func(w workload) bool { return w.name == name })
	if i < 0 {
		return nil, fmt.Errorf("unknown command %q (want sweep, conversation, single or embed)", name)
	}
	f := cli.New("bench " + name)
	cmd := commands[i].flags(f)
	fs := f.Set()
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintln(out, "usage:", usage)
		for _, w := range commands {
			fmt.Fprintf(out, "  %-13s %s\n", w.name, w.about)
		}
		fmt.Fprintf(out, "flags of %s:\n", fs.Name())
		fs.PrintDefaults()
	}
	if err := f.Parse(args); err != nil {
		return nil, err
	}
	if err := cmd.check(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// minConns is the least number of connections a client keeps to a host.
const minConns = 16

// shared are the flags of every command: endpoint A, the bounds, the
// sampling, and the local mesh.
type shared struct {
	urlA, modelA, apiKey      *string
	timeout, maxRun           *time.Duration
	seed                      *int
	temperature               *float64
	mesh, meshLogs            *string
	threads, parallel, ctxLen *int
}

func sharedFlags(f *cli.Flags) *shared {
	fs := f.Set()
	return &shared{
		urlA:        f.String("a", "SLM_BENCH_URL", "http://127.0.0.1:3111", "endpoint A: the base URL of an OpenAI-compatible API, or rpc://host:port of an inference instance called directly"),
		modelA:      f.String("model", "SLM_BENCH_MODEL_NAME", "", `"model" sent to A (empty: the first of GET /v1/models)`),
		apiKey:      f.String("api-key", "SLM_BENCH_API_KEY", "", "bearer token for both endpoints"),
		timeout:     fs.Duration("timeout", 5*time.Minute, "bound of one request"),
		maxRun:      fs.Duration("max-time", 2*time.Hour, "bound of the whole run"),
		seed:        fs.Int("seed", 1, "base of the per-request seeds"),
		temperature: fs.Float64("temperature", 1, "temperature of every request; random-weight models need 1 (greedy loops are cut short by some servers)"),
		mesh:        fs.String("mesh", "", "start a local mesh (binaries from make build) on this GGUF model and measure its gateway as A"),
		threads:     f.Int("threads", "SLM_THREADS", 0, "with -mesh: llama.cpp threads (0: the inference service's default, the CPUs but one)"),
		parallel:    f.Int("parallel", "SLM_PARALLEL", 0, "with -mesh: sequences decoded together (0: the inference default)"),
		ctxLen:      f.Int("ctx", "SLM_CTX", 0, "with -mesh: context per request in tokens (0: the inference default)"),
		meshLogs:    fs.String("mesh-log-dir", "", "with -mesh: where the services' logs go (default: a temporary directory)"),
	}
}

func (s *shared) maxTime() time.Duration { return *s.maxRun }

// client returns a client of url that keeps up to conns connections.
func (s *shared) client(url, model string, conns int) *bench.Client {
	return &bench.Client{BaseURL: url, APIKey: *s.apiKey, Model: model, Timeout: *s.timeout, HTTP: bench.NewHTTPClient(conns)}
}

// meshOptions are those of a local mesh on -mesh with inference instances
// and the services' extra arguments.
func (s *shared) meshOptions(inference int, extra map[string][]string) meshOptions {
	return meshOptions{model: *s.mesh, threads: *s.threads, parallel: *s.parallel, ctx: *s.ctxLen, apiKey: *s.apiKey, logDir: *s.meshLogs,
		inference: inference, extra: extra}
}

// pair are the flags of the commands that measure two endpoints
// alternately (sweep, conversation): endpoint B, the processes whose
// memory is read, and which endpoint a mesh is, or a pair of meshes.
type pair struct {
	urlB, modelB, pidA, pidB, meshAs, compare *string
	pidsA, pidsB                              []int // -pid and -pid-b, after check
}

func pairFlags(f *cli.Flags) *pair {
	fs := f.Set()
	return &pair{
		urlB:    f.String("b", "SLM_BENCH_URL_B", "", "endpoint B, measured alternately with A (A B A B per row); the ratio B/A is printed"),
		modelB:  f.String("model-b", "SLM_BENCH_MODEL_NAME_B", "", `"model" sent to B (empty: the first of GET /v1/models)`),
		pidA:    fs.String("pid", "", "comma-separated pids of A's server processes: their RSS and peak RSS (VmHWM) are summed"),
		pidB:    fs.String("pid-b", "", "comma-separated pids of B's server processes"),
		meshAs:  fs.String("mesh-as", "a", `with -mesh: the endpoint the mesh is, "a" or "b" (then -a is the other one, e.g. an anchor)`),
		compare: fs.String("compare", "", `with -mesh: start two meshes and measure them alternately: "reuse" (A: prompt reuse on, B: -no-prompt-cache) or "routing" (two inference instances each; A: -routing prefix, B: least-busy)`),
	}
}

// check refuses what the flag types let through; s holds -mesh.
func (p *pair) check(s *shared) error {
	var err error
	if p.pidsA, err = ints(*p.pidA); err != nil {
		return fmt.Errorf("-pid: %w", err)
	}
	if p.pidsB, err = ints(*p.pidB); err != nil {
		return fmt.Errorf("-pid-b: %w", err)
	}
	if *p.meshAs != "a" && *p.meshAs != "b" {
		return fmt.Errorf("-mesh-as %q: want a or b", *p.meshAs)
	}
	if *p.compare != "" {
		if *s.mesh == "" {
			return errors.New("-compare needs -mesh")
		}
		if _, ok := comparisons[*p.compare]; !ok {
			return fmt.Errorf("-compare %q: want reuse or routing", *p.compare)
		}
	}
	return nil
}

// endpoints starts the meshes the flags ask for and returns what to
// measure: A, A and B, or the two meshes of -compare. stop reports the
// peak memory of each mesh started and stops it; it is set even with an
// error.
func (p *pair) endpoints(ctx context.Context, s *shared, conns int) (eps []bench.Endpoint, stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, f := range slices.Backward(stops) {
			f()
		}
	}
	if *p.compare != "" {
		for _, v := range comparisons[*p.compare] {
			m, err := startMesh(ctx, s.meshOptions(v.inference, v.args))
			if err != nil {
				return nil, stop, err
			}
			stops = append(stops, func() {
				report(m, v.inference)
				m.Stop()
			})
			var pids []int
			for i := range v.inference {
				pids = append(pids, m.Proc(localmesh.InferenceName(i)).Pid())
			}
			eps = append(eps, bench.Endpoint{Name: v.name, Client: s.client(m.URL(), "", conns), PIDs: pids})
		}
		return eps, stop, nil
	}

	a := bench.Endpoint{Name: "A", Client: s.client(*s.urlA, *s.modelA, conns), PIDs: p.pidsA}
	var meshURL string
	var meshPID int
	if *s.mesh != "" {
		m, err := startMesh(ctx, s.meshOptions(1, nil))
		if err != nil {
			return nil, stop, err
		}
		stops = append(stops, func() {
			report(m, 1)
			m.Stop()
		})
		meshURL, meshPID = m.URL(), m.Proc(localmesh.InferenceName(0)).Pid()
		if *p.meshAs == "a" {
			a.Client.BaseURL, a.PIDs = meshURL, []int{meshPID}
		}
	}
	eps = []bench.Endpoint{a}
	if *p.urlB != "" || (meshURL != "" && *p.meshAs == "b") {
		b := bench.Endpoint{Name: "B", Client: s.client(*p.urlB, *p.modelB, conns), PIDs: p.pidsB}
		if meshURL != "" && *p.meshAs == "b" {
			b.Client.BaseURL, b.PIDs = meshURL, []int{meshPID}
		}
		eps = append(eps, b)
	}
	return eps, stop, nil
}

// header prints the command line and the date above the tables.
func header(args []string) {
	fmt.Printf("command: bench %s\n", strings.Join(args, " "))
	fmt.Printf("date: %s\n", time.Now().UTC().Format(time.RFC3339))
}

// measured is the error of a measurement: on Ctrl-C, that what was
// measured is printed.
func measured(err error) error {
	if errors.Is(err, context.Canceled) {
		return errors.New("interrupted; the tables above hold what was measured")
	}
	return err
}

// sweep measures prompt lengths × concurrency levels (bench.Run).
type sweep struct {
	*shared
	*pair
	prompts, concs string
	plan           bench.Plan // Prompts, Concurrency, Temperature and Seed after check
}

func sweepFlags(f *cli.Flags) command {
	fs := f.Set()
	c := &sweep{shared: sharedFlags(f), pair: pairFlags(f)}
	fs.StringVar(&c.prompts, "prompts", "32,128,512", "prompt lengths in tokens (approximate; the table shows what the server counted)")
	fs.StringVar(&c.concs, "concurrency", "1,2,4,8,16", "concurrency levels")
	fs.IntVar(&c.plan.MaxTokens, "max-tokens", 128, "max_tokens of every request")
	fs.IntVar(&c.plan.Requests, "requests", 0, "requests per level and round (0: twice the concurrency, at least 8)")
	fs.DurationVar(&c.plan.Duration, "duration", 0, "run each level for this long instead of a number of requests")
	fs.IntVar(&c.plan.Warmup, "warmup", 1, "unmeasured requests per endpoint first")
	fs.IntVar(&c.plan.Rounds, "rounds", 0, "rounds per row (0: 1 with one endpoint, 2 with two)")
	fs.BoolVar(&c.plan.NoCalibrate, "no-calibrate", false, "take one word per token instead of sizing prompts on A")
	return c
}

func (c *sweep) check() error {
	c.plan.Temperature, c.plan.Seed = *c.temperature, int64(*c.seed)
	var err error
	if c.plan.Prompts, err = ints(c.prompts); err != nil {
		return fmt.Errorf("-prompts: %w", err)
	}
	if c.plan.Concurrency, err = ints(c.concs); err != nil {
		return fmt.Errorf("-concurrency: %w", err)
	}
	return c.pair.check(c.shared)
}

func (c *sweep) run(ctx context.Context, args []string) error {
	conns := minConns
	for _, n := range c.plan.Concurrency {
		conns = max(conns, n)
	}
	eps, stop, err := c.endpoints(ctx, c.shared, conns)
	defer stop()
	if err != nil {
		return err
	}
	header(args)
	_, err = bench.Run(ctx, os.Stdout, os.Stderr, c.plan, eps)
	return measured(err)
}

// conversation runs multi-turn chats (bench.RunConversations).
type conversation struct {
	*shared
	*pair
	plan bench.ConversationPlan // Temperature and Seed after check
}

func conversationFlags(f *cli.Flags) command {
	fs := f.Set()
	c := &conversation{shared: sharedFlags(f), pair: pairFlags(f)}
	fs.IntVar(&c.plan.MaxTokens, "max-tokens", 64, "max_tokens of each answer")
	fs.IntVar(&c.plan.SystemWords, "system-words", 300, "words (about tokens) of the system prompt every conversation shares")
	fs.IntVar(&c.plan.Turns, "turns", 10, "turns per conversation")
	fs.IntVar(&c.plan.TurnWords, "turn-words", 100, "words of each user message")
	fs.IntVar(&c.plan.Conversations, "conversations", 1, "conversations at once per endpoint")
	fs.DurationVar(&c.plan.ThinkTime, "think-time", 0, "each turn waits a random time up to this first, as a user would, so that conversations drift out of step")
	fs.IntVar(&c.plan.Rounds, "rounds", 0, "rounds, each running the conversations on every endpoint in turn (0: 2)")
	return c
}

func (c *conversation) check() error {
	c.plan.Temperature, c.plan.Seed = *c.temperature, int64(*c.seed)
	return c.pair.check(c.shared)
}

func (c *conversation) run(ctx context.Context, args []string) error {
	eps, stop, err := c.endpoints(ctx, c.shared, max(minConns, c.plan.Conversations))
	defer stop()
	if err != nil {
		return err
	}
	header(args)
	fmt.Printf("machine: %s; load average at start %.2f\n", bench.Machine(), bench.LoadAverage())
	_, err = bench.RunConversations(ctx, os.Stdout, os.Stderr, c.plan, eps)
	fmt.Printf("load average at end %.2f\n", bench.LoadAverage())
	return measured(err)
}

// embed times /v1/embeddings requests (bench.RunEmbed).
type embed struct {
	*shared
	*pair
	plan bench.EmbedPlan // Seed after check
}

func embedFlags(f *cli.Flags) command {
	fs := f.Set()
	c := &embed{shared: sharedFlags(f), pair: pairFlags(f)}
	fs.IntVar(&c.plan.Inputs, "inputs", 64, "texts per request")
	fs.IntVar(&c.plan.Tokens, "tokens", 32, "tokens per text as A counts them, special tokens included (approximate)")
	fs.IntVar(&c.plan.Requests, "requests", 3, "requests per endpoint and round, one at a time")
	fs.IntVar(&c.plan.Rounds, "rounds", 3, "rounds, each sending the requests to every endpoint in turn")
	fs.IntVar(&c.plan.Warmup, "warmup", 1, "unmeasured requests per endpoint first")
	fs.BoolVar(&c.plan.NoCalibrate, "no-calibrate", false, "take one word per token instead of sizing the texts on A")
	return c
}

func (c *embed) check() error {
	for _, v := range []struct {
		name string
		n    int
	}{{"-inputs", c.plan.Inputs}, {"-tokens", c.plan.Tokens}, {"-requests", c.plan.Requests}, {"-rounds", c.plan.Rounds}} {
		if v.n <= 0 {
			return fmt.Errorf("%s %d: want a positive number", v.name, v.n)
		}
	}
	if c.plan.Warmup < 0 {
		return fmt.Errorf("-warmup %d: want 0 or more", c.plan.Warmup)
	}
	c.plan.Seed = uint64(*c.seed)
	return c.pair.check(c.shared)
}

func (c *embed) run(ctx context.Context, args []string) error {
	eps, stop, err := c.endpoints(ctx, c.shared, minConns)
	defer stop()
	if err != nil {
		return err
	}
	header(args)
	_, err = bench.RunEmbed(ctx, os.Stdout, os.Stderr, c.plan, eps)
	return measured(err)
}

// single sends one prompt end to end (bench.Single).
type single struct {
	*shared
	prompt    string
	maxTokens int
}

func singleFlags(f *cli.Flags) command {
	fs := f.Set()
	c := &single{shared: sharedFlags(f)}
	fs.StringVar(&c.prompt, "prompt", "What color is apple?", "the prompt to send (the default is the original system's request)")
	fs.IntVar(&c.maxTokens, "max-tokens", 100, "max_tokens of the request (100: the original system's)")
	return c
}

func (c *single) check() error { return nil }

func (c *single) run(ctx context.Context, _ []string) error {
	client := c.client(*c.urlA, *c.modelA, minConns)
	if *c.mesh != "" {
		m, err := startMesh(ctx, c.meshOptions(1, nil))
		if err != nil {
			return err
		}
		defer func() {
			report(m, 1)
			m.Stop()
		}()
		client.BaseURL = m.URL()
	}
	return bench.Single(ctx, os.Stdout, client, c.prompt, c.maxTokens, *c.temperature, int64(*c.seed))
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
