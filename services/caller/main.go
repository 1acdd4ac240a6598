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
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "caller:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	f := cli.New("caller")
	addr := f.String("addr", "SLM_CALLER_ADDR", "127.0.0.1:7002", "listen address (host:port) for RPC, /health and /metrics")
	disc := f.String("discovery", "SLM_DISCOVERY", "static", "how to find inference instances: static or consul")
	inferenceAddrs := f.String("inference", "SLM_INFERENCE_ADDRS", "127.0.0.1:7003", "inference instances for static discovery (comma-separated host:port)")
	consulAddr := f.String("consul-addr", "SLM_CONSUL_ADDR", "", "Consul HTTP address (default: CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
	register := f.Bool("consul-register", "SLM_CONSUL_REGISTER", false, "register in Consul with a /health check (outside Nomad)")
	advertise := f.String("advertise", "SLM_ADVERTISE", "", "address to register in Consul (default: -addr)")
	token := f.Secret("rpc-token", "SLM_RPC_TOKEN", "shared RPC token, presented to inference and required from gateways (empty: none)")
	routing := f.String("routing", "SLM_ROUTING", caller.RoutingPrefix, "how a request picks an inference instance: prefix (the turns of a conversation go to the instance holding them in its KV cache while it has a free slot) or least-busy")
	maxLimit := f.Int("max-tokens-limit", "SLM_MAX_TOKENS_LIMIT", 2048, "largest max_tokens a request may ask for")
	drain := f.Duration("drain-timeout", "SLM_DRAIN_TIMEOUT", 60*time.Second, "on SIGTERM, how long running calls may take to finish")
	timeouts := f.Timeouts(cli.PrivateTimeouts)
	logging := f.Log()
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := caller.CheckRouting(*routing); err != nil {
		return err
	}
	log := logging.Logger("caller")
	ctx, stop := cli.SignalContext()
	defer stop()

	resolver, err := discovery.FromFlags(*disc, discovery.ServiceInference, *inferenceAddrs, *consulAddr, log.Named("discovery"))
	if err != nil {
		return err
	}
	pool := rpc.NewPool(resolver, discovery.ServiceInference, caller.InferencePool(rpc.ClientConfig{Token: *token}, log.Named("pool")))
	defer pool.Close()

	srv := caller.New(caller.Config{
		MaxTokensLimit: *maxLimit, Inference: pool, Routing: *routing,
		RPC: rpc.ServerConfig{Token: *token}, Logger: log,
	})
	hs, err := cli.StartHTTP(*addr, srv, *timeouts, log)
	if err != nil {
		return err
	}
	if *register {
		deregister, err := discovery.RegisterSelf(ctx, *consulAddr, discovery.ServiceCaller, hs.Addr(), *advertise, log)
		if err != nil {
			return err
		}
		defer deregister()
	}
	return hs.Run(ctx, *drain, srv.Shutdown)
}
