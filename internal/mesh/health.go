package mesh

import (
	"encoding/json"
	"net/http"
)

// Health is the body of GET /health on every service: Status HealthOK, sent
// with 200, when the service can do its work now; else HealthUnavailable,
// sent with 503, with the first hop that cannot (Failing) and why (Error).
// Consul's checks read only the HTTP status.
type Health struct {
	Status string `json:"status"`
	// Failing is FailingCaller, FailingInference or FailingModel.
	Failing string `json:"failing,omitempty"`
	Error   string `json:"error,omitempty"`
	// Models lists the models served: by the inference instances a gateway
	// or a caller reaches, or by this inference instance.
	Models []string `json:"models,omitempty"`
	// Inference lists the inference instances a gateway or a caller
	// reaches, as CallerStatus does.
	Inference []InferenceStatus `json:"inference,omitempty"`
	// InferenceInfo is an inference instance's model and load; its fields
	// stand at the top of the body.
	*InferenceInfo
}

// Health statuses.
const (
	HealthOK          = "ok"
	HealthUnavailable = "unavailable"
)

// The hops a Health names as failing.
const (
	FailingCaller    = "caller"    // the gateway reaches no caller
	FailingInference = "inference" // no inference instance serves a model
	FailingModel     = "model"     // this inference instance is loading its model
)

// MeshHealth is the health of a service in front of the inference tier (a
// gateway, through the caller's status, or a caller itself): ok when some
// instance serves a model.
func MeshHealth(st CallerStatus) Health {
	h := Health{Status: HealthOK, Models: st.Models(), Inference: st.Inference}
	if len(h.Models) == 0 {
		h.Fail(FailingInference, "no inference instance is ready")
	}
	return h
}

// Fail marks h unavailable because of hop failing, for the reason why.
func (h *Health) Fail(failing, why string) {
	h.Status, h.Failing, h.Error = HealthUnavailable, failing, why
}

// Write sends h as the response: JSON, with 200 when it is ok, else 503.
func (h Health) Write(w http.ResponseWriter) {
	code := http.StatusOK
	if h.Status != HealthOK {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(h)
}
