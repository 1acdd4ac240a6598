package discovery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/cli"
)

// Discovery kinds, the values of a service's -discovery flag.
const (
	KindStatic = "static"
	KindConsul = "consul"
)

// FromFlags builds the resolver a service's flags ask for. kind is
// KindStatic, with staticAddrs a comma-separated host:port list for service,
// or KindConsul, with consulAddr overriding CONSUL_HTTP_ADDR when not empty
// (see NewConsulClient). logger is used as given.
func FromFlags(kind, service, staticAddrs, consulAddr string, logger hclog.Logger) (Resolver, error) {
	switch strings.ToLower(strings.TrimSpace(kind)) {
	case KindStatic, "":
		s := NewStatic()
		s.Set(service, cli.SplitList(staticAddrs)...)
		return s, nil
	case KindConsul:
		client, err := NewConsulClient(consulAddr)
		if err != nil {
			return nil, err
		}
		return NewConsul(client, logger), nil
	default:
		return nil, fmt.Errorf("discovery: unknown kind %q (want %s or %s)", kind, KindStatic, KindConsul)
	}
}

// ReregisterInterval is how often an instance registered by RegisterSelf
// checks that its Consul agent still holds the registration, and registers
// again if not (a -dev agent forgets every registration when it restarts).
const ReregisterInterval = 5 * time.Second

// RegisterSelf registers this process as an instance of service with the
// Consul agent at consulAddr (empty: CONSUL_HTTP_ADDR), with the default
// /health check, and logs it. The registered address is advertise, or
// listenAddr when advertise is empty; it must be one peers can reach, so a
// wildcard listen address needs an explicit advertise. It is for running
// outside Nomad, whose job files register the services instead. Until
// deregister is called, the registration is made again whenever the agent
// has lost it (checked every ReregisterInterval).
func RegisterSelf(ctx context.Context, consulAddr, service, listenAddr, advertise string, logger hclog.Logger) (deregister func() error, err error) {
	return RegisterSelfAs(ctx, consulAddr, Registration{Service: service}, listenAddr, advertise, logger)
}

// RegisterSelfAs is RegisterSelf for a registration with more than a
// service name (tags, meta: ModelRegistration); its Addr and Interval are
// RegisterSelf's.
func RegisterSelfAs(ctx context.Context, consulAddr string, reg Registration, listenAddr, advertise string, logger hclog.Logger) (deregister func() error, err error) {
	service := reg.Service
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	addr := advertise
	if addr == "" {
		addr = listenAddr
	}
	client, err := NewConsulClient(consulAddr)
	if err != nil {
		return nil, err
	}
	// Consul runs a new check first at a random moment within its interval;
	// a short one lets a self-registered instance (a laptop, a test) take
	// traffic within seconds of being ready. /health is cheap.
	reg.Addr, reg.Interval = addr, 2*time.Second
	dereg, err := Register(ctx, client, reg)
	if err != nil {
		if advertise == "" && errors.Is(err, ErrInvalidRegistration) {
			return nil, fmt.Errorf("%w (set the advertise address)", err)
		}
		return nil, err
	}
	logger.Info("registered in consul", "service", service, "addr", addr)
	stopKeeping := keepRegistered(client, reg, ReregisterInterval, logger)
	return func() error {
		stopKeeping()
		if err := dereg(); err != nil {
			logger.Warn("consul deregistration failed", "service", service, "error", err)
			return err
		}
		logger.Info("deregistered from consul", "service", service, "addr", addr)
		return nil
	}, nil
}
