package caller

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// Describe asks the inference instance at the other end of c what prefix
// routing and model routing need of it (rpc.PoolConfig.Describe): how many
// requests it decodes at once (its capacity) and the model it serves.
func Describe(ctx context.Context, c *rpc.Conn) (rpc.Description, error) {
	info, err := mesh.NewInferenceClient(c).Info(ctx)
	return rpc.Description{Capacity: info.Slots, Model: info.Model}, err
}

// described reads an inference instance's answer to the status broadcast
// (Status asks each its Info) as its description: an instance that
// answers ready there takes calls at once (rpc.PoolConfig.Described).
func described(method string, result json.RawMessage) (rpc.Description, bool) {
	var info mesh.InferenceInfo
	if method != mesh.MethodInfo || json.Unmarshal(result, &info) != nil {
		return rpc.Description{}, false
	}
	return rpc.Description{Capacity: info.Slots, Model: info.Model}, true
}

type modelContext struct{}

// withModel returns a context whose inference call goes only to an
// instance serving model (modelPicker).
func withModel(ctx context.Context, model string) context.Context {
	return context.WithValue(ctx, modelContext{}, model)
}

// modelPicker is the caller's rpc.Picker: the pool holds the instances of
// every model, and a call goes to one serving the model its context names
// (withModel), chosen among those by the routing policy's picker, so that
// prefix affinity and load bounds hold within each model's instances. None
// serving it: -1, and the pool waits for one as for any connection.
type modelPicker struct{ within rpc.Picker }

var _ rpc.Picker = modelPicker{}

// Pick implements rpc.Picker.
func (p modelPicker) Pick(ctx context.Context, candidates []rpc.Candidate) int {
	model, _ := ctx.Value(modelContext{}).(string)
	if model == "" {
		return p.within.Pick(ctx, candidates)
	}
	n := 0
	for _, c := range candidates {
		if c.Model == model {
			n++
		}
	}
	switch n {
	case 0:
		return -1
	case len(candidates): // one model, or only its instances left: no copy
		return p.within.Pick(ctx, candidates)
	}
	idx := make([]int, 0, n)
	sub := make([]rpc.Candidate, 0, n)
	for i, c := range candidates {
		if c.Model == model {
			idx = append(idx, i)
			sub = append(sub, c)
		}
	}
	return idx[p.within.Pick(ctx, sub)]
}

// models keeps the models the caller has seen its inference instances
// serve since it started, and its default model, so that a model whose
// instances are all down for a moment is still known: 503 until one is
// back, not 404.
type models struct {
	mu   sync.Mutex
	seen []string
}

// add adds models to those seen and returns them all, sorted.
func (m *models) add(models ...string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, model := range models {
		if model != "" && !slices.Contains(m.seen, model) {
			m.seen = append(m.seen, model)
			slices.Sort(m.seen)
		}
	}
	return slices.Clone(m.seen)
}

// update adds the models of instances to those seen and returns them all,
// sorted. complete is false while a connected instance has not said its
// model yet (it is still loading, or its description is on the way): the
// model it serves may be one not seen.
func (m *models) update(instances []rpc.InstanceStatus) (seen []string, complete bool) {
	complete = true
	names := make([]string, 0, len(instances))
	for _, in := range instances {
		if in.Model == "" && in.Connected {
			complete = false
		}
		names = append(names, in.Model)
	}
	return m.add(names...), complete
}

// model resolves the model of req: the one it names, else the default
// (Config.DefaultModel, else the only model the caller knows). It fails
// with not_found for a model the caller knows no instance of, and with
// invalid_argument for a request without one when several models are
// served and none is the default. While an instance it is connected to
// has not told its model (before any has, in particular), every model
// passes, and the pool's wait for an instance of it decides.
func (s *Server) model(req chat.Request) (string, error) {
	known, complete := s.known.update(s.pool.Instances())
	m := req.Model
	if m == "" {
		switch {
		case s.cfg.DefaultModel != "":
			return s.cfg.DefaultModel, nil
		case len(known) <= 1:
			return strings.Join(known, ""), nil
		}
		return "", chat.Invalidf("model", "You must name a model: this deployment serves %s.", strings.Join(known, ", "))
	}
	if complete && len(known) > 0 && !slices.Contains(known, m) {
		// No param, as OpenAI's model_not_found has none.
		return "", &chat.Error{Code: chat.CodeNotFound, Message: "The model `" + m + "` does not exist."}
	}
	return m, nil
}

// unavailable is the error of a call for model that found no instance of
// it ready: it names the model, and the gateway shows it (a 503).
func unavailable(model string, err error) error {
	e := chat.Wrap(err, chat.CodeUnavailable, "The model `"+model+"` has no instance ready; please retry shortly.")
	e.Param = "model"
	return e
}

// ready reports whether some connected instance serves model.
func (s *Server) ready(model string) bool {
	for _, in := range s.pool.Instances() {
		if in.Connected && in.Model == model {
			return true
		}
	}
	return false
}
