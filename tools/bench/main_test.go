package main

import (
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slm-mesh/slm-mesh/internal/bench"
)

// parseClean parses args with none of the environment variables the flags
// read set, so that the defaults are the flags' own.
func parseClean(t *testing.T, args ...string) (command, error) {
	t.Helper()
	for _, env := range []string{"SLM_BENCH_URL", "SLM_BENCH_URL_B", "SLM_BENCH_MODEL_NAME", "SLM_BENCH_MODEL_NAME_B",
		"SLM_BENCH_API_KEY", "SLM_THREADS", "SLM_PARALLEL", "SLM_CTX"} {
		t.Setenv(env, "") // restored after the test
		os.Unsetenv(env)
	}
	return parse(args, io.Discard)
}

// mustParse is parseClean for a command line that must parse into a T.
func mustParse[T command](t *testing.T, args ...string) T {
	t.Helper()
	cmd, err := parseClean(t, args...)
	if err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	c, ok := cmd.(T)
	if !ok {
		t.Fatalf("parse %q = %T, want %T", args, cmd, c)
	}
	return c
}

func TestSweepFlags(t *testing.T) {
	// No command is sweep, the default.
	for _, args := range [][]string{nil, {"sweep"}} {
		c := mustParse[*sweep](t, args...)
		want := bench.Plan{Prompts: []int{32, 128, 512}, Concurrency: []int{1, 2, 4, 8, 16}, MaxTokens: 128, Warmup: 1, Temperature: 1, Seed: 1}
		if !reflect.DeepEqual(c.plan, want) {
			t.Errorf("parse %q: plan %+v, want %+v", args, c.plan, want)
		}
		if *c.urlA != "http://127.0.0.1:3111" || *c.meshAs != "a" || *c.maxRun != 2*time.Hour || *c.timeout != 5*time.Minute {
			t.Errorf("parse %q: -a %q, -mesh-as %q, -max-time %v, -timeout %v", args, *c.urlA, *c.meshAs, *c.maxRun, *c.timeout)
		}
	}

	c := mustParse[*sweep](t, "sweep", "-a", "rpc://127.0.0.1:7003", "-b", "http://127.0.0.1:3111", "-model-b", "m",
		"-prompts", "32,128", "-concurrency", "1,8", "-max-tokens", "64", "-requests", "24", "-duration", "1m",
		"-warmup", "0", "-rounds", "4", "-no-calibrate", "-seed", "7", "-temperature", "0.5", "-pid", "10,11", "-pid-b", "12",
		"-mesh", "m.gguf", "-mesh-as", "b", "-threads", "2", "-parallel", "4", "-ctx", "4096", "-mesh-log-dir", "logs", "-max-time", "1h")
	want := bench.Plan{Prompts: []int{32, 128}, Concurrency: []int{1, 8}, MaxTokens: 64, Requests: 24, Duration: time.Minute,
		Rounds: 4, NoCalibrate: true, Temperature: 0.5, Seed: 7}
	if !reflect.DeepEqual(c.plan, want) {
		t.Errorf("plan %+v, want %+v", c.plan, want)
	}
	if *c.urlA != "rpc://127.0.0.1:7003" || *c.urlB != "http://127.0.0.1:3111" || *c.modelB != "m" ||
		!slices.Equal(c.pidsA, []int{10, 11}) || !slices.Equal(c.pidsB, []int{12}) || *c.meshAs != "b" {
		t.Errorf("endpoints: -a %q -b %q -model-b %q -pid %v -pid-b %v -mesh-as %q", *c.urlA, *c.urlB, *c.modelB, c.pidsA, c.pidsB, *c.meshAs)
	}
	if got, want := c.meshOptions(1, nil), (meshOptions{model: "m.gguf", threads: 2, parallel: 4, ctx: 4096, logDir: "logs", inference: 1}); !reflect.DeepEqual(got, want) {
		t.Errorf("mesh options %+v", got)
	}
	if c.maxTime() != time.Hour {
		t.Errorf("maxTime %v, want 1h", c.maxTime())
	}
}

func TestConversationFlags(t *testing.T) {
	c := mustParse[*conversation](t, "conversation")
	want := bench.ConversationPlan{SystemWords: 300, Turns: 10, TurnWords: 100, MaxTokens: 64, Conversations: 1, Temperature: 1, Seed: 1}
	if c.plan != want {
		t.Errorf("plan %+v, want %+v", c.plan, want)
	}

	c = mustParse[*conversation](t, "conversation", "-conversations", "16", "-think-time", "3s", "-turns", "8", "-turn-words", "50",
		"-system-words", "200", "-max-tokens", "32", "-rounds", "3", "-seed", "5", "-mesh", "m.gguf", "-compare", "routing", "-threads", "1")
	want = bench.ConversationPlan{SystemWords: 200, Turns: 8, TurnWords: 50, MaxTokens: 32, Conversations: 16, Rounds: 3,
		ThinkTime: 3 * time.Second, Temperature: 1, Seed: 5}
	if c.plan != want {
		t.Errorf("plan %+v, want %+v", c.plan, want)
	}
	if *c.compare != "routing" || *c.mesh != "m.gguf" || *c.threads != 1 {
		t.Errorf("-compare %q, -mesh %q, -threads %d", *c.compare, *c.mesh, *c.threads)
	}
}

func TestSingleFlags(t *testing.T) {
	c := mustParse[*single](t, "single")
	if c.prompt != "What color is apple?" || c.maxTokens != 100 || *c.temperature != 1 || *c.seed != 1 {
		t.Errorf("defaults: -prompt %q, -max-tokens %d, -temperature %v, -seed %d", c.prompt, c.maxTokens, *c.temperature, *c.seed)
	}
	c = mustParse[*single](t, "single", "-a", "http://127.0.0.1:3211", "-model", "m", "-api-key", "k", "-prompt", "Hi",
		"-max-tokens", "7", "-temperature", "0", "-seed", "3", "-timeout", "1m", "-mesh", "m.gguf")
	if c.prompt != "Hi" || c.maxTokens != 7 || *c.temperature != 0 || *c.seed != 3 || *c.urlA != "http://127.0.0.1:3211" ||
		*c.modelA != "m" || *c.apiKey != "k" || *c.timeout != time.Minute || *c.mesh != "m.gguf" {
		t.Errorf("-prompt %q -max-tokens %d -temperature %v -seed %d -a %q -model %q -api-key %q -timeout %v -mesh %q",
			c.prompt, c.maxTokens, *c.temperature, *c.seed, *c.urlA, *c.modelA, *c.apiKey, *c.timeout, *c.mesh)
	}
}

func TestEmbedFlags(t *testing.T) {
	c := mustParse[*embed](t, "embed")
	want := bench.EmbedPlan{Inputs: 64, Tokens: 32, Requests: 3, Rounds: 3, Warmup: 1, Seed: 1}
	if c.plan != want {
		t.Errorf("plan %+v, want %+v", c.plan, want)
	}
	c = mustParse[*embed](t, "embed", "-a", "http://127.0.0.1:11434", "-model", "slm-anchor", "-mesh", "m.gguf", "-mesh-as", "b",
		"-threads", "2", "-inputs", "16", "-tokens", "128", "-requests", "5", "-rounds", "4", "-warmup", "0", "-no-calibrate", "-seed", "9")
	want = bench.EmbedPlan{Inputs: 16, Tokens: 128, Requests: 5, Rounds: 4, NoCalibrate: true, Seed: 9}
	if c.plan != want {
		t.Errorf("plan %+v, want %+v", c.plan, want)
	}
	if *c.urlA != "http://127.0.0.1:11434" || *c.modelA != "slm-anchor" || *c.meshAs != "b" || *c.threads != 2 {
		t.Errorf("-a %q -model %q -mesh-as %q -threads %d", *c.urlA, *c.modelA, *c.meshAs, *c.threads)
	}
}

// TestRefused: each command takes its own flags only, and checks what the
// flag types let through before anything starts.
func TestRefused(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frob"}, `unknown command "frob"`},
		{[]string{"-single", "What color is apple?"}, "not defined: -single"},
		{[]string{"-conversation"}, "not defined: -conversation"},
		{[]string{"sweep", "-turns", "3"}, "not defined: -turns"},
		{[]string{"conversation", "-prompts", "32"}, "not defined: -prompts"},
		{[]string{"conversation", "-warmup", "2"}, "not defined: -warmup"},
		{[]string{"single", "-b", "http://127.0.0.1:1"}, "not defined: -b"},
		{[]string{"single", "-compare", "reuse"}, "not defined: -compare"},
		{[]string{"sweep", "extra"}, "unexpected arguments"},
		{[]string{"sweep", "-prompts", "32,0"}, "-prompts"},
		{[]string{"sweep", "-concurrency", "x"}, "-concurrency"},
		{[]string{"sweep", "-pid", "x"}, "-pid"},
		{[]string{"conversation", "-pid-b", "-1"}, "-pid-b"},
		{[]string{"sweep", "-mesh-as", "c"}, "-mesh-as"},
		{[]string{"sweep", "-compare", "reuse"}, "-compare needs -mesh"},
		{[]string{"conversation", "-mesh", "m.gguf", "-compare", "speed"}, `-compare "speed"`},
		{[]string{"embed", "-inputs", "0"}, "-inputs 0"},
		{[]string{"embed", "-rounds", "-1"}, "-rounds -1"},
		{[]string{"embed", "-warmup", "-1"}, "-warmup -1"},
		{[]string{"embed", "-prompts", "32"}, "not defined: -prompts"},
		{[]string{"embed", "-mesh-as", "c"}, "-mesh-as"},
	}
	for _, tt := range tests {
		if _, err := parseClean(t, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parse %q: error %v, want one with %q", tt.args, err, tt.want)
		}
	}
}
