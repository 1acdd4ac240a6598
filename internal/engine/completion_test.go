package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

func rawPrompt(text string, maxTokens int) Request {
	return Request{Request: chat.Request{RawPrompt: &text, MaxTokens: maxTokens, Temperature: f32(0)}}
}

// A completion's raw prompt generates, greedily, what the chat path
// generates for a message that renders to the same text (stories260K's
// template is plain), and from the same tokens.
func TestRawCompletionEqualsChatPath(t *testing.T) {
	e := openStories(t, Config{Parallel: 2})
	for _, p := range []string{"", "Once upon a time", "Lily and Ben went to the park"} {
		raw, rres := generate(t, e, rawPrompt(p, 40))
		msg, mres := generate(t, e, userMsg(p, 40))
		if raw != msg || rres.PromptTokens != mres.PromptTokens {
			t.Errorf("prompt %q: raw %q (%d prompt tokens), chat %q (%d)", p, raw, rres.PromptTokens, msg, mres.PromptTokens)
		}
	}
	// The empty prompt is BOS alone: the golden continuation.
	if raw, _ := generate(t, e, rawPrompt("", 80)); strings.TrimLeft(raw, " ") != storiesGolden {
		t.Errorf("raw completion of BOS %q differs from the golden text", raw)
	}
}

// A client's prompt never spells a control token: "<s>" is text.
func TestRawCompletionNoControlTokens(t *testing.T) {
	e := openStories(t, Config{Parallel: 1})
	_, asText := generate(t, e, rawPrompt("<s>", 1))
	ctl := "<s>"
	_, asControl := generate(t, e, Request{Prompt: ctl, Request: chat.Request{MaxTokens: 1, Temperature: f32(0)}})
	if asText.PromptTokens <= asControl.PromptTokens {
		t.Errorf("raw prompt \"<s>\" is %d tokens, the same as the control token's %d", asText.PromptTokens, asControl.PromptTokens)
	}
}

func TestRawCompletionRefused(t *testing.T) {
	e := openStories(t, Config{Parallel: 1, ContextPerSeq: 64})
	long := strings.Repeat("Once upon a time ", 40)
	for _, tc := range []struct {
		name  string
		req   Request
		param string
	}{
		{"too long", rawPrompt(long, 0), "prompt"},
		{"prompt and max_tokens too long", rawPrompt("Once upon a time", 63), "prompt"},
		{"with messages", Request{Request: chat.Request{RawPrompt: new(string), Messages: []chat.Message{{Role: "user", Content: "x"}}}}, "messages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.GenerateDeltas(context.Background(), tc.req, nil)
			ce, ok := err.(*chat.Error)
			if !ok || ce.Code != chat.CodeInvalidArgument || ce.Param != tc.param {
				t.Fatalf("error %v, want invalid_argument naming %s", err, tc.param)
			}
		})
	}
}
