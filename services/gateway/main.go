// Command gateway is the public edge of slm-mesh: the OpenAI-compatible API
// on :3111 (POST /v1/chat/completions, GET /v1/models, /health, /metrics).
package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/cli"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/gateway"
	"github.com/slm-mesh/slm-mesh/internal/openai"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
	"github.com/slm-mesh/slm-mesh/internal/telemetry"
)

// The gateway rewrites net/http's own error responses into the API's format
// through the listener StartHTTP gives it.
var _ cli.ListenerWrapper = (*gateway.Server)(nil)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	f := cli.New("gateway")
	def := gateway.DefaultConfig()
	addr := f.String("addr", "SLM_GATEWAY_ADDR", "127.0.0.1:3111", "listen address of the public API")
	disc := f.String("discovery", "SLM_DISCOVERY", "static", "how to find caller instances: static or consul")
	callerAddrs := f.String("caller", "SLM_CALLER_ADDRS", "127.0.0.1:7002", "caller instances for static discovery (comma-separated host:port)")
	consulAddr := f.String("consul-addr", "SLM_CONSUL_ADDR", "", "Consul HTTP address (default: CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
	register := f.Bool("consul-register", "SLM_CONSUL_REGISTER", false, "register in Consul with a /health check (outside Nomad)")
	advertise := f.String("advertise", "SLM_ADVERTISE", "", "address to register in Consul (default: -addr)")
	token := f.Secret("rpc-token", "SLM_RPC_TOKEN", "RPC token presented to callers (empty: none)")
	callerCA := f.String("caller-ca", "SLM_CALLER_CA", "", "PEM CA of the callers' RPC certificates: RPC to callers over TLS, checking the name "+discovery.ServiceCaller+" (empty: plain ws://)")
	apiKeys := f.Secret("api-keys", "SLM_API_KEYS", "comma-separated API keys required on /v1/* (empty: no auth)")
	apiKeysFile := f.String("api-keys-file", "SLM_API_KEYS_FILE", "", "file with one API key per line (added to -api-keys)")
	cors := f.String("cors-origins", "SLM_CORS_ORIGINS", "", "comma-separated origins allowed by CORS (empty: CORS off; * for any)")
	maxBody := f.Int("max-body-bytes", "SLM_MAX_BODY_BYTES", int(def.Limits.MaxBodyBytes), "largest request body")
	maxMessages := f.Int("max-messages", "SLM_MAX_MESSAGES", def.Limits.MaxMessages, "most messages in a request")
	maxChars := f.Int("max-chars", "SLM_MAX_CHARS", def.Limits.MaxChars, "most characters in all messages of a request")
	rateLimit := f.Int("rate-limit", "SLM_RATE_LIMIT", 0, "chat requests per second allowed per API key (or client address); 0: no limit")
	rateBurst := f.Int("rate-burst", "SLM_RATE_BURST", def.RateBurst, "burst allowed above -rate-limit")
	bodyTimeout := f.Duration("body-timeout", "SLM_BODY_TIMEOUT", def.BodyTimeout, "longest wait for the next bytes of a request body; a client that stops sending gets 408")
	timeout := f.Duration("request-timeout", "SLM_REQUEST_TIMEOUT", def.RequestTimeout, "longest a request may take, generation included")
	drain := f.Duration("drain-timeout", "SLM_DRAIN_TIMEOUT", 60*time.Second, "on SIGTERM, how long running requests may take to finish")
	// A client may take a minute to send a request (a body of up to
	// -max-body-bytes), and 30 s for each write of a response to go out.
	timeouts := f.Timeouts(cli.Timeouts{ReadHeader: 10 * time.Second, Read: time.Minute, Write: 30 * time.Second, Idle: 2 * time.Minute})
	logging := f.Log()
	if err := f.Parse(args); err != nil {
		return err
	}
	log := logging.Logger("gateway")
	traces, err := telemetry.Start(telemetry.DefaultConfig(), log)
	if err != nil {
		return err
	}
	defer traces.Stop() // after the drain: the last requests' spans leave too
	ctx, stop := cli.SignalContext()
	defer stop()

	keys := cli.SplitList(*apiKeys)
	if *apiKeysFile != "" {
		data, err := os.ReadFile(*apiKeysFile)
		if err != nil {
			return fmt.Errorf("api keys: %w", err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				keys = append(keys, line)
			}
		}
	}

	resolver, err := discovery.FromFlags(*disc, discovery.ServiceCaller, *callerAddrs, *consulAddr, log.Named("discovery"))
	if err != nil {
		return err
	}
	client := rpc.ClientConfig{Token: *token}
	if *callerCA != "" {
		if client.TLS, err = rpc.ClientTLSConfig(*callerCA, discovery.ServiceCaller); err != nil {
			return err
		}
	}
	pool := rpc.NewPool(resolver, discovery.ServiceCaller, rpc.PoolConfig{
		Client: client,
		Logger: log.Named("pool"),
	})
	defer pool.Close()

	srv, err := gateway.New(gateway.Config{
		Caller: pool, APIKeys: keys, CORSOrigins: cli.SplitList(*cors),
		Limits:         openai.Limits{MaxBodyBytes: int64(*maxBody), MaxMessages: *maxMessages, MaxChars: *maxChars},
		RequestTimeout: *timeout, WriteTimeout: timeouts.Write,
		BodyTimeout: *bodyTimeout, ReadTimeout: timeouts.Read,
		RateLimit: float64(*rateLimit), RateBurst: *rateBurst, Logger: log,
	})
	if err != nil {
		return err
	}
	hs, err := cli.StartHTTP(*addr, srv, *timeouts, nil, log)
	if err != nil {
		return err
	}
	log.Info("API ready", "url", "http://"+hs.Addr()+"/v1/chat/completions", "auth", len(keys) > 0)
	if *register {
		deregister, err := discovery.RegisterSelf(ctx, *consulAddr, discovery.ServiceGateway, hs.Addr(), *advertise, log)
		if err != nil {
			return err
		}
		defer deregister()
	}
	// The gateway's own drain is the HTTP server's: Shutdown waits for the
	// running requests.
	return hs.Run(ctx, *drain, nil)
}
