// Package e2e holds the end-to-end tests: the real gateway, caller and
// inference binaries, started through internal/localmesh as the run command
// starts them, on loopback and free ports, serving the stories260K model,
// driven with the official OpenAI Go SDK and plain net/http.
//
// Each top-level test starts its own mesh and runs its subtests one after
// the other on it, so that one subtest's load never disturbs another's
// counters; the top-level tests run in parallel with each other.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/slm-mesh/slm-mesh/internal/consulagent"
	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// The binaries are built once per run of the test binary, on first use, so
// that a run whose tests are all skipped (no model) builds nothing.
var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binaries builds gateway, caller and inference into a temporary directory
// and returns it. The first cgo build of llama.cpp takes minutes; Go's build
// cache makes later ones take seconds.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "slm-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildDir = dir
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		var out bytes.Buffer
		start := time.Now()
		if err := localmesh.Build(ctx, modeltest.RepoRoot(), dir, &out); err != nil {
			buildErr = fmt.Errorf("%w\n%s", err, out.String())
			return
		}
		t.Logf("built the services in %s", time.Since(start).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return buildDir
}

// consulBinary finds the Consul agent the project builds; without one the
// test is skipped, except under CI, where it must have been built.
func consulBinary(t *testing.T) string {
	t.Helper()
	bin, err := consulagent.FindBinary(modeltest.RepoRoot())
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v (CI is set, so this is a failure; `make consul` builds it)", err)
		}
		t.Skipf("no Consul agent, so the mesh cannot use Consul discovery: %v (`make consul` builds it)", err)
	}
	return bin
}

// mesh is a running local mesh owned by one test.
type mesh struct {
	*localmesh.Mesh
	// model is the name the mesh serves the model under (with several,
	// the first /health lists).
	model string
	// apiKey is sent by client and request; empty when the gateway needs none.
	apiKey string
}

// startMesh starts a mesh of the real binaries on the stories260K model
// (or cfg.Model, or cfg.Models, when set) and free loopback ports, and stops it when t ends (showing each service's last
// log lines if t failed). Zero fields of cfg take test defaults: one thread
// per inference instance (the machine's cores are shared with the other
// tests, and llama.cpp's threads spin-wait: two of them on a busy pair of
// cores run several times slower than one) and a 512-token context.
func startMesh(t *testing.T, cfg localmesh.Config) *mesh {
	t.Helper()
	if cfg.Model == "" {
		cfg.Model = modeltest.Stories(t)
	}
	cfg.BinDir = binaries(t)
	if cfg.Threads == 0 {
		cfg.Threads = 1
	}
	if cfg.Ctx == 0 {
		cfg.Ctx = 512
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 2 * time.Minute
	}
	if cfg.Inference == 0 {
		cfg.Inference = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ReadyTimeout)
	defer cancel()

	var (
		lm  *localmesh.Mesh
		err error
	)
	// A port that was free a moment ago may be taken by another process
	// before a service binds it; then start again on other ports.
	for attempt := 1; attempt <= 3; attempt++ {
		gateway, caller, inference, err := localmesh.FreePorts(cfg.Inference)
		if err != nil {
			t.Fatal(err)
		}
		cfg.GatewayAddr = "127.0.0.1:" + strconv.Itoa(gateway)
		cfg.CallerPort, cfg.InferencePort = caller, inference
		cfg.Dir = t.TempDir()
		start := time.Now()
		lm, err = localmesh.Start(ctx, cfg)
		if err == nil {
			t.Logf("mesh ready in %s: gateway %s, logs in %s", time.Since(start).Round(time.Millisecond), lm.URL(), cfg.Dir)
			break
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
		t.Logf("port taken, starting again: %v", err)
	}
	if err != nil {
		t.Fatalf("start mesh: %v", err)
	}
	m := &mesh{Mesh: lm}
	if cfg.APIKeys != "" {
		m.apiKey = strings.Split(cfg.APIKeys, ",")[0]
	}
	names := []string{"gateway", "caller"}
	for i := range cfg.Inference {
		names = append(names, localmesh.InferenceName(i))
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range names {
				if p := lm.Proc(name); p != nil {
					t.Logf("last log lines of %s (%s):\n%s", name, p.ExitStatus(), p.TailText())
				}
			}
		}
		start := time.Now()
		lm.Stop()
		t.Logf("mesh stopped in %s", time.Since(start).Round(time.Millisecond))
	})

	var h healthReport
	if code := m.getJSON(t, m.URL()+"/health", &h); code != http.StatusOK || len(h.Models) != max(len(cfg.Models), 1) {
		t.Fatalf("/health of a ready mesh: %d %+v", code, h)
	}
	m.model = h.Models[0]
	return m
}

// client is an OpenAI SDK client of the mesh's gateway, with the SDK's own
// retries off so that every status the gateway sends is seen.
func (m *mesh) client(opts ...option.RequestOption) sdk.Client {
	key := m.apiKey
	if key == "" {
		key = "unused" // the SDK would otherwise read OPENAI_API_KEY
	}
	return sdk.NewClient(append([]option.RequestOption{
		option.WithBaseURL(m.URL() + "/v1/"),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
	}, opts...)...)
}

// greedy is a chat request for the story that follows prompt, with
// temperature 0 so that the text is the same every time.
func (m *mesh) greedy(prompt string, maxTokens int64) sdk.ChatCompletionNewParams {
	return sdk.ChatCompletionNewParams{
		Model:               m.model,
		Messages:            []sdk.ChatCompletionMessageParamUnion{sdk.UserMessage(prompt)},
		MaxCompletionTokens: sdk.Int(maxTokens),
		Temperature:         sdk.Float(0),
	}
}

// complete runs a non-streamed chat request and fails t on error.
func (m *mesh) complete(t *testing.T, p sdk.ChatCompletionNewParams) *sdk.ChatCompletion {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := m.client()
	res, err := c.Chat.Completions.New(ctx, p)
	if err != nil {
		t.Fatalf("chat completion: %v", err)
	}
	if len(res.Choices) != 1 {
		t.Fatalf("%d choices in %s", len(res.Choices), res.RawJSON())
	}
	return res
}

// streamed is what a client read from one streamed chat completion.
type streamed struct {
	text         string
	ids          map[string]bool
	role         string // of the first chunk
	finish       string
	finishChunks int
	usage        *sdk.CompletionUsage
	contentParts int // chunks that carried text
	logprobs     []sdk.ChatCompletionTokenLogprob
	err          error
}

// readStream reads stream to its end. onText, when set, is called after
// each piece of text; returning false stops reading.
func readStream(stream *ssestream.Stream[sdk.ChatCompletionChunk], onText func(string) bool) streamed {
	defer stream.Close()
	s := streamed{ids: map[string]bool{}}
	first := true
	for stream.Next() {
		c := stream.Current()
		s.ids[c.ID] = true
		if first {
			first = false
			if len(c.Choices) == 1 {
				s.role = c.Choices[0].Delta.Role
			}
		}
		if c.JSON.Usage.Valid() {
			u := c.Usage
			s.usage = &u
		}
		for _, ch := range c.Choices {
			s.logprobs = append(s.logprobs, ch.Logprobs.Content...)
			if ch.Delta.Content != "" {
				s.text += ch.Delta.Content
				s.contentParts++
			}
			if ch.FinishReason != "" {
				s.finish = ch.FinishReason
				s.finishChunks++
			}
		}
		if onText != nil && len(c.Choices) == 1 && c.Choices[0].Delta.Content != "" && !onText(s.text) {
			return s
		}
	}
	s.err = stream.Err()
	return s
}

// healthReport is the part of the gateway's /health body the tests read.
type healthReport struct {
	Status    string   `json:"status"`
	Models    []string `json:"models"`
	Failing   string   `json:"failing"`
	Error     string   `json:"error"`
	Inference []struct {
		Addr  string `json:"addr"`
		Model string `json:"model"`
		Error string `json:"error"`
	} `json:"inference"`
}

// liveInstances counts the inference instances /health reports with a
// model.
func (h healthReport) liveInstances() int {
	n := 0
	for _, in := range h.Inference {
		if in.Error == "" && in.Model != "" {
			n++
		}
	}
	return n
}

// inferenceHealth is the part of an inference instance's /health body the
// tests read.
type inferenceHealth struct {
	Status string `json:"status"`
	Slots  int    `json:"slots"`
	Busy   int    `json:"busy"`
	Queued int    `json:"queued"`
}

var httpClient = &http.Client{Timeout: time.Minute}

// request sends one HTTP request to the gateway, with the mesh's API key
// unless header sets Authorization, and returns the response with its body
// read. It fails t on a transport error, so it must run in t's goroutine;
// send is for others.
func (m *mesh) request(t *testing.T, method, path, body string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := m.send(method, path, body, header)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// send is request without t.
func (m *mesh) send(method, path, body string, header http.Header) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, m.URL()+path, strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if m.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+m.apiKey)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	return resp, b, nil
}

// getJSON gets url and decodes its JSON body into v; it returns the status.
func (m *mesh) getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %d %q is not JSON: %v", url, resp.StatusCode, b, err)
	}
	return resp.StatusCode
}

// inferenceHealth reads the /health of inference instance name.
func (m *mesh) inferenceHealth(t *testing.T, name string) inferenceHealth {
	t.Helper()
	var h inferenceHealth
	m.getJSON(t, "http://"+m.Addr(name)+"/health", &h)
	return h
}

// gatewayHealth reads the gateway's /health.
func (m *mesh) gatewayHealth(t *testing.T) (int, healthReport) {
	t.Helper()
	var h healthReport
	code := m.getJSON(t, m.URL()+"/health", &h)
	return code, h
}

// metrics is one scrape of a Prometheus text endpoint, as the samples
// Prometheus would store: a histogram's _count, _sum and _bucket series
// apart.
type metrics model.Vector

// scrape reads the /metrics of the service listening on addr.
func scrape(t *testing.T, addr string) metrics {
	t.Helper()
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %d", addr, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation) // the zero TextParser is invalid
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	samples, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{}, slices.Collect(maps.Values(families))...)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return metrics(samples)
}

// sum adds the series of metric name whose labels include every pair in
// labels (each written `key="value"`).
func (ms metrics) sum(name string, labels ...string) float64 {
	want := model.LabelSet{model.MetricNameLabel: model.LabelValue(name)}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		unquoted, err := strconv.Unquote(v)
		if err != nil {
			panic(fmt.Sprintf("label %s: not key=\"value\"", l))
		}
		want[model.LabelName(k)] = model.LabelValue(unquoted)
	}
	total := 0.0
	for _, s := range ms {
		if matches(s.Metric, want) {
			total += float64(s.Value)
		}
	}
	return total
}

// matches reports whether m has every label of want, with its value.
func matches(m model.Metric, want model.LabelSet) bool {
	for k, v := range want {
		if m[k] != v {
			return false
		}
	}
	return true
}

// has reports whether any series of metric name was exposed.
func (ms metrics) has(name string) bool {
	return slices.ContainsFunc(ms, func(s *model.Sample) bool {
		return s.Metric[model.MetricNameLabel] == model.LabelValue(name)
	})
}

// eventually polls cond every interval until it holds or timeout passes,
// and reports whether it held.
func eventually(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// apiError is the OpenAI error envelope.
type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
