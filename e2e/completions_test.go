package e2e

import (
	"strings"
	"testing"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/packages/param"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
)

// TestCompletionsSDK: legacy completions through the real binaries with
// the OpenAI SDK on stories260K — a raw prompt's greedy text equals the
// chat path's for a message that renders to the same text; several
// prompts give several choices; echo; streamed chunks rebuild the same
// text, with usage at the end; suffix refused.
func TestCompletionsSDK(t *testing.T) {
	m := startMesh(t, localmesh.Config{Parallel: 2})
	c := m.client()
	ctx := testContext(t)
	prompt := "Once upon a time"

	res, err := c.Completions.New(ctx, sdk.CompletionNewParams{
		Model:       sdk.CompletionNewParamsModel(m.model),
		Prompt:      sdk.CompletionNewParamsPromptUnion{OfString: sdk.String(prompt)},
		MaxTokens:   sdk.Int(24),
		Temperature: sdk.Float(0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Object != "text_completion" || !strings.HasPrefix(res.ID, "cmpl-") || len(res.Choices) != 1 || res.Model != m.model {
		t.Fatalf("response %s", res.RawJSON())
	}
	text := res.Choices[0].Text
	if res.Choices[0].FinishReason != "length" || res.Usage.CompletionTokens != 24 || res.Usage.TotalTokens != res.Usage.PromptTokens+24 || text == "" {
		t.Fatalf("response %s", res.RawJSON())
	}
	if chat := m.complete(t, m.greedy(prompt, 24)); chat.Choices[0].Message.Content != text {
		t.Errorf("completion %q, chat %q", text, chat.Choices[0].Message.Content)
	}

	// Two prompts, echo: two choices, each its prompt then its text.
	two, err := c.Completions.New(ctx, sdk.CompletionNewParams{
		Model:       sdk.CompletionNewParamsModel(m.model),
		Prompt:      sdk.CompletionNewParamsPromptUnion{OfArrayOfStrings: []string{prompt, "Lily saw a"}},
		MaxTokens:   sdk.Int(24),
		Temperature: sdk.Float(0),
		Echo:        sdk.Bool(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(two.Choices) != 2 || two.Choices[0].Index != 0 || two.Choices[1].Index != 1 {
		t.Fatalf("response %s", two.RawJSON())
	}
	if two.Choices[0].Text != prompt+text || !strings.HasPrefix(two.Choices[1].Text, "Lily saw a") || two.Choices[1].Text == "Lily saw a" {
		t.Errorf("choices %q and %q", two.Choices[0].Text, two.Choices[1].Text)
	}
	if two.Usage.CompletionTokens != 48 {
		t.Errorf("usage %+v, want 48 completion tokens", two.Usage)
	}

	// Streamed: the same text, piece by piece, then usage.
	stream := c.Completions.NewStreaming(ctx, sdk.CompletionNewParams{
		Model:         sdk.CompletionNewParamsModel(m.model),
		Prompt:        sdk.CompletionNewParamsPromptUnion{OfString: sdk.String(prompt)},
		MaxTokens:     sdk.Int(24),
		Temperature:   sdk.Float(0),
		StreamOptions: sdk.ChatCompletionStreamOptionsParam{IncludeUsage: param.NewOpt(true)},
	})
	var b strings.Builder
	chunks, finish := 0, ""
	var usage sdk.CompletionUsage
	for stream.Next() {
		ch := stream.Current()
		if ch.Object != "text_completion" {
			t.Fatalf("chunk %s", ch.RawJSON())
		}
		for _, choice := range ch.Choices {
			b.WriteString(choice.Text)
			if choice.FinishReason != "" {
				finish = string(choice.FinishReason)
			}
		}
		if ch.Usage.TotalTokens > 0 {
			usage = ch.Usage
		}
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if b.String() != text || finish != "length" || chunks < 3 || usage.CompletionTokens != 24 {
		t.Errorf("stream: %d chunks, text %q (want %q), finish %q, usage %+v", chunks, b.String(), text, finish, usage)
	}

	_, err = c.Completions.New(ctx, sdk.CompletionNewParams{
		Model:  sdk.CompletionNewParamsModel(m.model),
		Prompt: sdk.CompletionNewParamsPromptUnion{OfString: sdk.String(prompt)},
		Suffix: sdk.String("The end."),
	})
	wantAPIError(t, err, 400, "suffix", "suffix")
	_, err = c.Completions.New(ctx, sdk.CompletionNewParams{
		Model:     sdk.CompletionNewParamsModel(m.model),
		Prompt:    sdk.CompletionNewParamsPromptUnion{OfString: sdk.String(strings.Repeat("Once upon a time ", 200))},
		MaxTokens: sdk.Int(4),
	})
	wantAPIError(t, err, 400, "prompt", "tokens")
}
