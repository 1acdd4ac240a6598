package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/mesh"
	"github.com/slm-mesh/slm-mesh/internal/rpc"
)

// rpcScheme marks an endpoint that is an inference instance spoken to
// directly over the mesh's RPC (rpc://127.0.0.1:7003), without gateway and
// caller: the baseline that shows what the two hops cost.
const rpcScheme = "rpc://"

// isRPC reports whether the client talks RPC to an inference instance.
func (c *Client) isRPC() bool { return strings.HasPrefix(c.BaseURL, rpcScheme) }

// rpcConns holds one connection per inference address for the whole run.
var rpcConns = struct {
	sync.Mutex
	m map[string]*rpc.Conn
}{m: map[string]*rpc.Conn{}}

func (c *Client) rpcConn(ctx context.Context) (*rpc.Conn, error) {
	addr := strings.TrimPrefix(c.BaseURL, rpcScheme)
	rpcConns.Lock()
	defer rpcConns.Unlock()
	if conn := rpcConns.m[addr]; conn != nil && conn.Err() == nil {
		return conn, nil
	}
	conn, err := rpc.Dial(ctx, addr, rpc.ClientConfig{Token: c.APIKey})
	if err != nil {
		return nil, err
	}
	rpcConns.m[addr] = conn
	return conn, nil
}

// streamRPC is Stream for an rpc:// endpoint: inference::run_inference.
func (c *Client) streamRPC(ctx context.Context, req Request, timeout time.Duration) Sample {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s := Sample{Start: time.Now()}
	conn, err := c.rpcConn(ctx)
	if err != nil {
		s.Err = err
		return s
	}
	temp := float32(req.Temperature)
	creq := chat.Request{
		Model:       c.Model,
		Messages:    chatMessages(req.messages()),
		MaxTokens:   req.MaxTokens,
		Temperature: &temp,
		Seed:        req.Seed,
	}
	var text strings.Builder
	chunks := 0
	res, err := mesh.NewInferenceClient(conn).RunInference(ctx, creq, func(d chat.Delta) error {
		now := time.Since(s.Start)
		if d.Content == "" {
			return nil
		}
		if chunks == 0 {
			s.FirstToken = now
		}
		s.LastToken = now
		chunks++
		if req.KeepText {
			text.WriteString(d.Content)
		}
		return nil
	})
	s.Latency = time.Since(s.Start)
	s.Text = text.String()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no complete answer within %v: %w", timeout, err)
		}
		s.Err = err
		return s
	}
	s.UsageReported = true
	s.PromptTokens, s.CompletionTokens, s.CachedTokens = res.PromptTokens, res.CompletionTokens, res.CachedTokens
	return s
}

func chatMessages(ms []Message) []chat.Message {
	out := make([]chat.Message, len(ms))
	for i, m := range ms {
		out[i] = chat.Message{Role: m.Role, Content: m.Content}
	}
	return out
}

// modelsRPC is Models for an rpc:// endpoint: inference::info.
func (c *Client) modelsRPC(ctx context.Context) ([]string, error) {
	conn, err := c.rpcConn(ctx)
	if err != nil {
		return nil, err
	}
	info, err := mesh.NewInferenceClient(conn).Info(ctx)
	if err != nil {
		return nil, err
	}
	return []string{info.Model}, nil
}
