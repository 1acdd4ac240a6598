// Package mesh is the contract between the tiers of slm-mesh: the RPC
// methods the gateway, caller and inference services call on each other,
// the types those calls carry, typed clients over an rpc.Pool (or one
// rpc.Conn), and typed registration of a service's handlers on an
// rpc.Server. Each method and type is declared here once, as nomad's api
// package declares each resource once behind c.Jobs(); the services depend
// on this package and never on each other.
//
// The domain types a generation carries (chat.Request, chat.Delta,
// chat.Result) stay in internal/chat; this package adds what only the mesh
// needs: method names and the status reports.
//
//	gateway ── CallerClient ──► caller    (CallerService: get_response, status)
//	caller  ── InferenceClient ► inference (InferenceService: run_inference, info)
//
// JSON encoding and decoding of every payload happens here, in one place;
// rpc stays a generic transport.
package mesh

import (
	"context"
	"slices"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// Methods served in the mesh. The names keep the function ids of the system
// slm-mesh replaces.
const (
	// MethodGetResponse is served by the caller tier; the gateway calls it.
	// Request chat.Request, chunks chat.Delta, result chat.Result.
	MethodGetResponse = "inference::get_response"
	// MethodStatus is served by the caller tier: the inference instances it
	// reaches and their models, for the gateway's /health and /v1/models.
	// No request; result CallerStatus.
	MethodStatus = "caller::status"
	// MethodRunInference is served by the inference tier; the caller calls
	// it. Request chat.Request, chunks chat.Delta, result chat.Result.
	MethodRunInference = "inference::run_inference"
	// MethodInfo is served by the inference tier: its model and load. No
	// request; result InferenceInfo.
	MethodInfo = "inference::info"
)

// CallerService is what the caller tier serves. The caller's server
// implements it; so does CallerClient, which calls one over the mesh.
type CallerService interface {
	// GetResponse generates a completion for req, passing each piece of
	// text to send as it is produced. An error from send ends the
	// generation.
	GetResponse(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error)
	// Status reports the inference instances the caller reaches.
	Status(ctx context.Context) (CallerStatus, error)
}

// InferenceService is what the inference tier serves. The inference
// server implements it; so does InferenceClient.
type InferenceService interface {
	// RunInference generates a completion for req, as GetResponse.
	RunInference(ctx context.Context, req chat.Request, send func(chat.Delta) error) (chat.Result, error)
	// Info reports the instance's model and load; it fails with
	// chat.CodeUnavailable while the model is loading.
	Info(ctx context.Context) (InferenceInfo, error)
}

// CallerStatus is the result of caller::status: what the gateway's /health
// and /v1/models report.
type CallerStatus struct {
	// Inference lists the inference instances the caller routes to: those
	// that answered with their model, and those that did not with why.
	Inference []InferenceStatus `json:"inference"`
	// Known lists the models the caller routes, sorted: those its
	// instances serve or have served since it started, and its default. A
	// model known with no instance ready is unavailable (503), one not
	// known does not exist (404). Empty from a caller that predates it.
	Known []string `json:"known_models,omitempty"`
	// Default is the model a request that names none goes to; empty when
	// there is none (several models and no default set).
	Default string `json:"default_model,omitempty"`
}

// InferenceStatus is one inference instance as a caller sees it: its model,
// or why it cannot serve (an instance the pool is reconnecting to is
// listed "not connected"). It differs from rpc.InstanceStatus, which is the
// pool's view of a connection.
type InferenceStatus struct {
	Addr  string `json:"addr"`
	Model string `json:"model,omitempty"`
	// Created is when the model file was made (Unix seconds); 0 if unknown.
	Created int64  `json:"created,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Models returns the distinct models of the instances that answered, in
// the order of st.Inference.
func (st CallerStatus) Models() []string {
	var out []string
	for _, in := range st.Inference {
		if in.Error == "" && in.Model != "" && !slices.Contains(out, in.Model) {
			out = append(out, in.Model)
		}
	}
	return out
}

// Created returns when model's file was made (Unix seconds), as the first
// instance that serves it and knows says; 0 if none does. The gateway
// reports it as the model's "created".
func (st CallerStatus) Created(model string) int64 {
	for _, in := range st.Inference {
		if in.Error == "" && in.Model == model && in.Created != 0 {
			return in.Created
		}
	}
	return 0
}

// InferenceInfo is the result of inference::info (which fails with
// unavailable while the model is loading), and part of an inference
// instance's GET /health (Health).
type InferenceInfo struct {
	Model         string `json:"model,omitempty"`
	Created       int64  `json:"created,omitempty"` // the model file's time, Unix seconds
	Template      string `json:"template,omitempty"`
	Slots         int    `json:"slots"`
	Busy          int    `json:"busy"`
	Queued        int    `json:"queued"`
	ContextPerSeq int    `json:"context_per_request,omitempty"`
	UptimeSeconds int64  `json:"uptime_seconds"`
}
