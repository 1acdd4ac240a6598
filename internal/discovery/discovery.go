// Package discovery tells a service where the healthy instances of another
// service are. Two resolvers implement it: Consul (health API with blocking
// queries) and Static (a fixed list, the default when running on one machine).
package discovery

import "context"

// Consul service names of the three tiers.
const (
	ServiceGateway   = "slm-gateway"
	ServiceCaller    = "slm-caller"
	ServiceInference = "slm-inference"
)

// Instance is one healthy instance of a service.
type Instance struct {
	// ID is unique per instance (Consul's service ID, or the address for a
	// static list).
	ID string
	// Addr is host:port of the instance's RPC and /health port.
	Addr string
	// Model is the model an inference instance serves, when the source
	// knows it (Consul: the service meta MetaModel); empty otherwise, as
	// in a static list, whose instances tell their model when asked.
	Model string
}

// MetaModel is the Consul service meta key under which an inference
// instance registers the model it serves; it is tagged TagModel(model) too.
const MetaModel = "model"

// TagModel is the Consul tag of an inference instance serving model, for
// operators who filter by tag ("model=<id>").
func TagModel(model string) string { return MetaModel + "=" + model }

// ModelRegistration is the registration of an inference instance serving
// model: ServiceInference with the meta MetaModel and the tag TagModel.
func ModelRegistration(model string) Registration {
	return Registration{
		Service: ServiceInference,
		Tags:    []string{TagModel(model)},
		Meta:    map[string]string{MetaModel: model},
	}
}

// Resolver yields the healthy instances of a service.
type Resolver interface {
	// Watch sends the current set of healthy instances of service, then a new
	// set each time it changes, until ctx is done; then the channel is
	// closed. A resolver that cannot reach its source keeps the last known set
	// rather than sending an empty one.
	Watch(ctx context.Context, service string) <-chan []Instance
}
