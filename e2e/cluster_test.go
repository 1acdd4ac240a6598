package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/slm-mesh/slm-mesh/internal/clusterbox"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// TestClusterInABox runs the production cluster on this machine
// (internal/clusterbox): three servers and the clients of each role in
// network namespaces, with the agent configuration that Terraform's plan
// module renders (mTLS, ACLs, gossip encryption, the exec driver), the
// services released into the AWS emulator's S3 with tools/release and the
// jobs submitted with tools/submit and production variables by an
// operator token that is not the management token. Then every gateway
// must answer a chat completion, a task attacks its node and the cluster
// from inside (runSecurity), and the drills run (runDrills). Everything
// the box made is removed at the end, whatever happened.
//
// It needs root and the tools listed by clusterbox.Config.Check; without
// them it is skipped, except under CI, where it fails.
func TestClusterInABox(t *testing.T) {
	root := modeltest.RepoRoot()
	cfg := clusterbox.Config{
		Root: root,
		Dir:  filepath.Join(root, ".cache", "box-e2e"),
		Log:  &lineLogger{t: t},
	}
	if err := cfg.Check(); err != nil {
		if errors.Is(err, clusterbox.ErrMissing) && os.Getenv("CI") == "" {
			t.Skipf("the cluster in a box cannot run here: %v", err)
		}
		t.Fatalf("%v (CI is set, so this is a failure)", err)
	}
	model := modeltest.Stories(t)

	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()
	// Registered before Up: a box that fails halfway is removed too.
	t.Cleanup(func() {
		if err := clusterbox.Down(context.Background(), cfg); err != nil {
			t.Errorf("down: %v", err)
		}
	})
	box, err := clusterbox.Up(ctx, cfg)
	if err != nil {
		if box != nil {
			t.Logf("unit logs:\n%s", box.LogTails(30))
		}
		t.Fatal(err)
	}
	// The clients run the agent as released: Nomad's test-only task driver
	// is not built in (tools/nomad/build.sh's release tag).
	mgmt, err := box.Nomad(box.ManagementToken())
	if err != nil {
		t.Fatal(err)
	}
	nodes, _, err := mgmt.Nodes().List(&nomadapi.QueryOptions{Params: map[string]string{"resources": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if _, ok := n.Drivers["mock_driver"]; ok {
			t.Errorf("client %s offers Nomad's test-only mock_driver", n.Name)
		}
		if d := n.Drivers["exec"]; d == nil || !d.Healthy {
			t.Errorf("client %s: the exec driver is not healthy: %+v", n.Name, d)
		}
	}

	if err := box.Deploy(ctx, model); err != nil {
		t.Logf("unit logs:\n%s", box.LogTails(30))
		t.Fatal(err)
	}
	urls, err := box.GatewayURLs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(urls) < 2 {
		t.Fatalf("%d gateways run (%v), want 2", len(urls), urls)
	}
	for _, u := range urls {
		text, err := box.Chat(ctx, u, "Once upon a time")
		if err != nil {
			t.Errorf("gateway %s: %v", u, err)
			continue
		}
		t.Logf("gateway %s answers %q", u, text)
	}

	// The operator's token submitted the jobs; it must not be able to
	// manage the cluster.
	op, err := box.Nomad(box.OperatorToken())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := op.ACLTokens().List(nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("the operator token lists ACL tokens (err %v), want 403", err)
	}

	t.Run("security", func(t *testing.T) { runSecurity(ctx, t, box) })
	t.Run("model family", func(t *testing.T) { runModelFamily(ctx, t, box, urls[0]) })
	runDrills(ctx, t, box)
}

// runModelFamily adds an embedding model to the running cluster as an
// operator would (extra_models: a task group of its own, the file from the
// artifacts bucket), checks that the gateway routes to it by name while a
// request naming no model still goes to the default one, and takes it out
// again, leaving the cluster as the drills expect it.
func runModelFamily(ctx context.Context, t *testing.T, box *clusterbox.Box, gateway string) {
	const extra = ggufgen.PresetEmbeddingGemmaTiny
	start := time.Now()
	if err := box.ServeModels(ctx, map[string]string{extra: modeltest.Preset(t, extra)}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s deployed beside %s in %s", extra, clusterbox.ModelName, time.Since(start).Round(time.Second))
	// Removed whatever happens below: the drills run on the box's model.
	defer func() {
		if err := box.ServeModels(ctx, nil); err != nil {
			t.Errorf("taking %s out: %v", extra, err)
		}
	}()

	c, err := box.Nomad(box.OperatorToken())
	if err != nil {
		t.Fatal(err)
	}
	summary, _, err := c.Jobs().Summary("slm-inference", nil)
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := summary.Summary["inference-"+extra]; !ok || g.Running != 1 {
		t.Errorf("job summary %+v: want group inference-%s with one running allocation", summary.Summary, extra)
	}
	if g := summary.Summary["inference"]; g.Running != 2 {
		t.Errorf("the default model's group runs %d allocations, want its 2", g.Running)
	}

	client := sdk.NewClient(option.WithBaseURL(gateway+"/v1/"), option.WithAPIKey(box.APIKey()))
	// The deployment is healthy once Consul passes the new instance's
	// check; the caller learns it from its watch a moment later.
	var models []string
	if !eventually(time.Minute, time.Second, func() bool {
		page, err := client.Models.List(ctx)
		models = nil
		for _, m := range page.Data {
			models = append(models, m.ID)
		}
		return err == nil && slices.Contains(models, extra) && slices.Contains(models, clusterbox.ModelName)
	}) {
		t.Fatalf("/v1/models lists %v, want %s and %s", models, clusterbox.ModelName, extra)
	}
	emb, err := client.Embeddings.New(ctx, sdk.EmbeddingNewParams{
		Model: extra,
		Input: sdk.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a cluster", "of small models"}},
	})
	if err != nil || len(emb.Data) != 2 || len(emb.Data[0].Embedding) == 0 || emb.Model != extra {
		t.Fatalf("embeddings from %s: %+v, %v", extra, emb, err)
	}
	// A chat request naming no model goes to the default model.
	chat, err := client.Chat.Completions.New(ctx, sdk.ChatCompletionNewParams{
		Messages:  []sdk.ChatCompletionMessageParamUnion{sdk.UserMessage("Once upon a time")},
		MaxTokens: sdk.Int(8),
	})
	if err != nil || chat.Model != clusterbox.ModelName {
		t.Errorf("chat without a model: %+v, %v; want an answer from %s", chat, err, clusterbox.ModelName)
	}
}

// lineLogger sends each line written to it to t.Log.
type lineLogger struct {
	t   *testing.T
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(line)
			return len(p), nil
		}
		l.t.Log(strings.TrimRight(line, "\n"))
	}
}
