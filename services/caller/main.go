// Command caller is the policy tier: it serves inference::get_response to the
// gateways and forwards each request to an inference instance.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/caller"
	"github.com/slm-mesh/slm-mesh/internal/cli"
	"github.com/slm-mesh/slm-mesh/internal/discovery"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
	"github.com/slm-mesh/slm-mesh/internal/telemetry"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "caller:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	f := cli.New("caller")
	def := caller.DefaultConfig()
	addr := f.String("addr", "SLM_CALLER_ADDR", "127.0.0.1:7002", "listen address (host:port) for RPC, /health and /metrics")
	disc := f.String("discovery", "SLM_DISCOVERY", "static", "how to find inference instances: static or consul")
	inferenceAddrs := f.String("inference", "SLM_INFERENCE_ADDRS", "127.0.0.1:7003", "inference instances for static discovery (comma-separated host:port)")
	consulAddr := f.String("consul-addr", "SLM_CONSUL_ADDR", "", "Consul HTTP address (default: CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
	register := f.Bool("consul-register", "SLM_CONSUL_REGISTER", false, "register in Consul with a /health check (outside Nomad)")
	advertise := f.String("advertise", "SLM_ADVERTISE", "", "address to register in Consul (default: -addr)")
	token := f.Secret("rpc-token", "SLM_RPC_TOKEN", "RPC token gateways must present (empty: none)")
	inferenceToken := f.Secret("inference-token", "SLM_INFERENCE_TOKEN", "RPC token presented to inference (empty: the -rpc-token)")
	inferenceCA := f.String("inference-ca", "SLM_INFERENCE_CA", "", "PEM CA of inference's RPC certificates: RPC to inference over TLS, checking the name "+discovery.ServiceInference+" (empty: plain ws://)")
	serverTLS := f.ServerTLS()
	routing := f.String("routing", "SLM_ROUTING", def.Routing, "how a request picks an inference instance: prefix (the turns of a conversation go to the instance holding them in its KV cache while it has a free slot) or least-busy")
	defaultModel := f.String("default-model", "SLM_DEFAULT_MODEL", "", "model a request that names none goes to (default: the only model served, if one)")
	maxLimit := f.Int("max-tokens-limit", "SLM_MAX_TOKENS_LIMIT", def.MaxTokensLimit, "largest max_tokens a request may ask for")
	drain := f.Duration("drain-timeout", "SLM_DRAIN_TIMEOUT", 60*time.Second, "on SIGTERM, how long running calls may take to finish")
	timeouts := f.Timeouts(cli.PrivateTimeouts)
	logging := f.Log()
	if err := f.Parse(args); err != nil {
		return err
	}
	log := logging.Logger("caller")
	traces, err := telemetry.Start(telemetry.DefaultConfig(), log)
	if err != nil {
		return err
	}
	defer traces.Stop() // after the drain: the last requests' spans leave too
	ctx, stop := cli.SignalContext()
	defer stop()

	if *inferenceToken == "" {
		*inferenceToken = *token // one token for both hops, as on one machine
	}
	client := rpc.ClientConfig{Token: *inferenceToken}
	if *inferenceCA != "" {
		if client.TLS, err = rpc.ClientTLSConfig(*inferenceCA, discovery.ServiceInference); err != nil {
			return err
		}
	}
	tlsCfg, err := serverTLS.Config()
	if err != nil {
		return err
	}
	resolver, err := discovery.FromFlags(*disc, discovery.ServiceInference, *inferenceAddrs, *consulAddr, log.Named("discovery"))
	if err != nil {
		return err
	}
	srv, err := caller.New(caller.Config{
		MaxTokensLimit: *maxLimit, Inference: resolver, Client: client, Routing: *routing,
		DefaultModel: *defaultModel, RPC: rpc.ServerConfig{Token: *token}, Logger: log,
	})
	if err != nil {
		return err
	}
	hs, err := cli.StartHTTP(*addr, srv, *timeouts, tlsCfg, log)
	if err != nil {
		return err
	}
	if *register {
		reg := discovery.Registration{Service: discovery.ServiceCaller, TLS: tlsCfg != nil}
		deregister, err := discovery.RegisterSelfAs(ctx, *consulAddr, reg, hs.Addr(), *advertise, log)
		if err != nil {
			return err
		}
		defer deregister()
	}
	return hs.Run(ctx, *drain, srv.Shutdown)
}
