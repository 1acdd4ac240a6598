// Command inference serves one GGUF model to the mesh: inference::run_inference
// over WebSocket RPC, GET /health and GET /metrics on one port.
package main

import (
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/cli"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/engine"
	"github.com/slm-mesh/slm-mesh/internal/inference"
	"github.com/slm-mesh/slm-mesh/internal/model"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
	"github.com/slm-mesh/slm-mesh/internal/telemetry"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "inference:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	f := cli.New("inference")
	def := engine.DefaultConfig()
	addr := f.String("addr", "SLM_INFERENCE_ADDR", "127.0.0.1:7003", "listen address (host:port) for RPC, /health and /metrics")
	modelArg := f.String("model", "SLM_MODEL", model.DefaultURL, "GGUF model: a local path or an https URL")
	modelSHA := f.String("model-sha256", "SLM_MODEL_SHA256", "", "sha256 of the model download (required for URLs other than the default)")
	modelName := f.String("model-name", "SLM_MODEL_NAME", "", "name the model is served under (default: the file name without extension; gemma-3-270m-it for the default)")
	cacheDir := f.String("cache-dir", "SLM_CACHE_DIR", "", "model download cache (default: the user cache dir)")
	threads := f.Int("threads", "SLM_THREADS", def.Threads, "llama.cpp threads, by default one per CPU but one (at least one); Go gets the CPUs left, at least one (GOMAXPROCS overrides)")
	parallel := f.Int("parallel", "SLM_PARALLEL", def.Parallel, "sequences decoded together")
	ctxPerSeq := f.Int("ctx", "SLM_CTX", def.ContextPerSeq, "context per request in tokens (prompt + completion)")
	batch := f.Int("batch", "SLM_BATCH", def.BatchSize, "maximum tokens per decode step")
	queue := f.Int("queue", "SLM_QUEUE", def.QueueSize, "requests that may wait for a slot (0: 4 x parallel)")
	maxQueueWait := f.SignedDuration("max-queue-wait", "SLM_MAX_QUEUE_WAIT", def.MaxQueueWait, "longest a request may expect to wait for a slot, from how fast slots free; past it the request is refused with a retry time (negative: no bound but -queue)")
	maxTokens := f.Int("default-max-tokens", "SLM_DEFAULT_MAX_TOKENS", def.DefaultMaxTokens, "completion length when a request sets none")
	flash := f.String("flash-attention", "SLM_FLASH_ATTENTION", def.FlashAttention, "flash attention: auto, on or off")
	kvType := f.String("kv-cache-type", "SLM_KV_CACHE_TYPE", def.KVCacheType, "KV cache type: f16, or q8_0 / q4_0 (1/2, 1/4 of the memory; need flash attention)")
	noPromptCache := f.Bool("no-prompt-cache", "SLM_NO_PROMPT_CACHE", false, "do not reuse a slot's KV cache for a prompt sharing its prefix (a conversation's earlier turns): every request processes its whole prompt")
	token := f.Secret("rpc-token", "SLM_RPC_TOKEN", "RPC token callers must present (empty: none)")
	serverTLS := f.ServerTLS()
	drain := f.Duration("drain-timeout", "SLM_DRAIN_TIMEOUT", 60*time.Second, "on SIGTERM, how long running generations may take to finish")
	timeouts := f.Timeouts(cli.PrivateTimeouts)
	register := f.Bool("consul-register", "SLM_CONSUL_REGISTER", false, "register in Consul with a /health check (outside Nomad)")
	consulAddr := f.String("consul-addr", "SLM_CONSUL_ADDR", "", "Consul HTTP address (default: CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
	advertise := f.String("advertise", "SLM_ADVERTISE", "", "address to register in Consul (default: -addr)")
	logging := f.Log()
	if err := f.Parse(args); err != nil {
		return err
	}
	log := logging.Logger("inference")
	traces, err := telemetry.Start(telemetry.DefaultConfig(), log)
	if err != nil {
		return err
	}
	defer traces.Stop() // after the drain: the last requests' spans leave too
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(engine.GoMaxProcs(*threads))
	}
	ctx, stop := cli.SignalContext()
	defer stop()

	cfg := engine.Config{
		ModelName: *modelName, Threads: *threads, Parallel: *parallel,
		ContextPerSeq: *ctxPerSeq, BatchSize: *batch, QueueSize: *queue, MaxQueueWait: *maxQueueWait,
		DefaultMaxTokens: *maxTokens, FlashAttention: *flash, KVCacheType: *kvType, NoPromptCache: *noPromptCache,
		Logger: log.Named("engine"),
	}
	if err := cfg.Validate(); err != nil { // before listening or downloading
		return err
	}

	srv := inference.New(inference.Config{RPC: rpc.ServerConfig{Token: *token}, Logger: log})
	tlsCfg, err := serverTLS.Config()
	if err != nil {
		return err
	}
	hs, err := cli.StartHTTP(*addr, srv, *timeouts, tlsCfg, log)
	if err != nil {
		return err
	}

	// /health says "loading" (503) until the model is ready.
	src := model.Source{Ref: *modelArg, SHA256: *modelSHA}
	if *modelName == "" {
		*modelName = src.Name()
	}
	path, err := model.Fetch(ctx, src, model.FetchOptions{
		CacheDir: *cacheDir, Logger: log.Named("model"), Progress: os.Stderr,
	})
	if err != nil {
		return fmt.Errorf("model: %w", err)
	}
	cfg.ModelPath, cfg.ModelName = path, *modelName
	eng, err := engine.Open(cfg)
	if err != nil {
		return err
	}
	defer eng.Close()
	srv.SetEngine(eng)
	log.Info("ready", "model", eng.Name(), "addr", hs.Addr(), "gomaxprocs", runtime.GOMAXPROCS(0))

	if *register {
		reg := discovery.ModelRegistration(eng.Name())
		reg.TLS = tlsCfg != nil
		deregister, err := discovery.RegisterSelfAs(ctx, *consulAddr, reg, hs.Addr(), *advertise, log)
		if err != nil {
			return err
		}
		defer deregister()
	}
	return hs.Run(ctx, *drain, srv.Shutdown)
}
