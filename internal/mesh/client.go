package mesh

import (
	"context"
	"encoding/json"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// Transport carries a client's calls: an *rpc.Pool (the services), or one
// *rpc.Conn (benchmarks that measure a single instance). Errors are the
// domain's: find the code with chat.Code.
type Transport interface {
	Call(ctx context.Context, method string, req any, onChunk func(json.RawMessage) error) (json.RawMessage, error)
	Broadcast(ctx context.Context, method string, req any) []rpc.BroadcastResult
}

var (
	_ Transport = (*rpc.Pool)(nil)
	_ Transport = (*rpc.Conn)(nil)
)

// CallerClient calls the caller tier.
type CallerClient struct{ t Transport }

var _ CallerService = (*CallerClient)(nil)

// NewCallerClient returns a client that sends its calls through t.
func NewCallerClient(t Transport) *CallerClient { return &CallerClient{t: t} }

// GetResponse calls inference::get_response: onDelta receives each piece of
// text as it arrives (an error from it cancels the call, down to the
// inference sequence), and the result ends the call.
func (c *CallerClient) GetResponse(ctx context.Context, req chat.Request, onDelta func(chat.Delta) error) (chat.Result, error) {
	return generate(ctx, c.t, MethodGetResponse, req, onDelta)
}

// Status calls caller::status.
func (c *CallerClient) Status(ctx context.Context) (CallerStatus, error) {
	var st CallerStatus
	err := call(ctx, c.t, MethodStatus, &st)
	return st, err
}

// InferenceClient calls the inference tier.
type InferenceClient struct{ t Transport }

var _ InferenceService = (*InferenceClient)(nil)

// NewInferenceClient returns a client that sends its calls through t.
func NewInferenceClient(t Transport) *InferenceClient { return &InferenceClient{t: t} }

// RunInference calls inference::run_inference; see CallerClient.GetResponse.
func (c *InferenceClient) RunInference(ctx context.Context, req chat.Request, onDelta func(chat.Delta) error) (chat.Result, error) {
	return generate(ctx, c.t, MethodRunInference, req, onDelta)
}

// Info calls inference::info on one instance (the pool's choice).
func (c *InferenceClient) Info(ctx context.Context) (InferenceInfo, error) {
	var info InferenceInfo
	err := call(ctx, c.t, MethodInfo, &info)
	return info, err
}

// Infos asks every instance for its info at once, without retries, and
// reports each: its model, or why it cannot serve. Through an *rpc.Pool that
// is every connected instance, followed by those the pool is still
// connecting to ("not connected"), so that a report names an instance that
// is down rather than leaving it out; through one connection it is that
// connection's instance, with an empty Addr.
func (c *InferenceClient) Infos(ctx context.Context) []InferenceStatus {
	var out []InferenceStatus
	for _, r := range c.t.Broadcast(ctx, MethodInfo, nil) {
		var info InferenceInfo
		err := r.Err
		if err == nil {
			err = decodeResult(r.Result, &info, MethodInfo)
		}
		out = append(out, status(r.Addr, info, err))
	}
	return out
}

func status(addr string, info InferenceInfo, err error) InferenceStatus {
	if err != nil {
		return InferenceStatus{Addr: addr, Error: err.Error()}
	}
	return InferenceStatus{Addr: addr, Model: info.Model, Created: info.Created}
}

// generate makes a generation call: chat.Request in, chat.Delta chunks,
// chat.Result out.
func generate(ctx context.Context, t Transport, method string, req chat.Request, onDelta func(chat.Delta) error) (chat.Result, error) {
	raw, err := t.Call(ctx, method, req, func(chunk json.RawMessage) error {
		var d chat.Delta
		if err := json.Unmarshal(chunk, &d); err != nil {
			return chat.Errorf(chat.CodeInternal, "%s: bad chunk: %v", method, err)
		}
		if onDelta == nil {
			return nil
		}
		return onDelta(d)
	})
	var res chat.Result
	if err == nil {
		err = decodeResult(raw, &res, method)
	}
	return res, err
}

// call makes a call without a request or chunks and decodes its result
// into res.
func call(ctx context.Context, t Transport, method string, res any) error {
	raw, err := t.Call(ctx, method, nil, nil)
	if err != nil {
		return err
	}
	return decodeResult(raw, res, method)
}

// decodeResult reads a result; one that does not decode is the peer's
// fault, not the caller's.
func decodeResult(raw json.RawMessage, v any, method string) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return chat.Errorf(chat.CodeInternal, "%s: bad result: %v", method, err)
	}
	return nil
}
