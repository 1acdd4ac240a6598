package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/openai"
)

// Client sends chat completions to one OpenAI-compatible endpoint.
type Client struct {
	// BaseURL is the API root, e.g. http://127.0.0.1:3111 (a trailing /v1
	// is accepted too), or rpc://host:port of one inference instance, called
	// directly over the mesh's RPC (APIKey is then the RPC token).
	BaseURL string
	// APIKey, when set, is sent as a bearer token.
	APIKey string
	// Model is sent as "model"; empty: left out (servers with one model).
	Model string
	// Timeout bounds one request, body included; default 5 minutes.
	Timeout time.Duration
	// HTTP is the client used; default: one with keep-alive connections
	// enough for the highest concurrency.
	HTTP *http.Client
}

// Request is one completion request of the workload.
type Request struct {
	Prompt string
	// Messages, when set, are sent instead of one user message holding
	// Prompt (a conversation's turns).
	Messages    []Message
	MaxTokens   int
	Temperature float64
	// Seed, when not nil, makes a sampled completion reproducible.
	Seed *int64
	// KeepText keeps the completion's text in the Sample.
	KeepText bool
}

func (c *Client) url(path string) string {
	base := strings.TrimRight(c.BaseURL, "/")
	base = strings.TrimSuffix(base, "/v1")
	return base + path
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// NewHTTPClient returns an http.Client that keeps up to conns connections
// to one host open, so that connection setup is not measured.
func NewHTTPClient(conns int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = max(conns, 2) * 2
	t.MaxIdleConnsPerHost = max(conns, 2) * 2
	// Streams are small JSON chunks; gzip would only add latency.
	t.DisableCompression = true
	return &http.Client{Transport: t}
}

// Message is one message of a conversation, as the chat API takes it.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// messages is what req sends.
func (req Request) messages() []Message {
	if req.Messages != nil {
		return req.Messages
	}
	return []Message{{Role: "user", Content: req.Prompt}}
}

// Stream sends req as a streaming chat completion and times it from the
// client's side: the first and last content chunk and the end of the
// response. Token counts come from the final usage chunk
// (stream_options.include_usage); a server that sends none is counted one
// token per content chunk. Errors are returned in the Sample.
func (c *Client) Stream(ctx context.Context, req Request) Sample {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	if c.isRPC() {
		return c.streamRPC(ctx, req, timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	body := map[string]any{
		"messages":       req.messages(),
		"max_tokens":     req.MaxTokens,
		"temperature":    req.Temperature,
		"stream":         true,
		"stream_options": map[string]bool{"include_usage": true},
	}
	if c.Model != "" {
		body["model"] = c.Model
	}
	if req.Seed != nil {
		body["seed"] = *req.Seed
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return Sample{Start: time.Now(), Err: err}
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/v1/chat/completions"), bytes.NewReader(payload))
	if err != nil {
		return Sample{Start: time.Now(), Err: err}
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "text/event-stream")
	if c.APIKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.APIKey)
	}

	s := Sample{Start: time.Now()}
	resp, err := c.http().Do(hreq)
	if err != nil {
		s.Err = err
		return s
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		s.Err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
		return s
	}
	var text strings.Builder
	chunks := 0
	err = ReadSSE(resp.Body, func(data []byte) error {
		now := time.Since(s.Start)
		ch, err := openai.DecodeChunk(data)
		var apiErr *openai.Error
		if errors.As(err, &apiErr) {
			return fmt.Errorf("error in stream: %s", apiErr.Message)
		}
		if err != nil {
			return fmt.Errorf("bad chunk %.200q: %w", data, err)
		}
		for _, choice := range ch.Choices {
			if choice.Delta.Content == nil || *choice.Delta.Content == "" {
				continue
			}
			if chunks == 0 {
				s.FirstToken = now
			}
			s.LastToken = now
			chunks++
			if req.KeepText {
				text.WriteString(*choice.Delta.Content)
			}
		}
		if ch.Usage != nil {
			s.UsageReported = true
			s.PromptTokens, s.CompletionTokens = ch.Usage.PromptTokens, ch.Usage.CompletionTokens
			s.CachedTokens = ch.Usage.PromptTokensDetails.CachedTokens
		}
		return nil
	})
	s.Latency = time.Since(s.Start)
	s.Text = text.String()
	if !s.UsageReported {
		s.CompletionTokens = chunks
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("no complete answer within %v: %w", timeout, err)
	}
	s.Err = err
	return s
}

// Models lists the endpoint's models (GET /v1/models).
func (c *Client) Models(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if c.isRPC() {
		return c.modelsRPC(ctx)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/models"), nil)
	if err != nil {
		return nil, err
	}
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/models: HTTP %d", resp.StatusCode)
	}
	var list openai.ModelList
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list); err != nil {
		return nil, fmt.Errorf("GET /v1/models: %w", err)
	}
	ids := make([]string, 0, len(list.Data))
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	return ids, nil
}
