package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"
)

// pet is the Go side of petSchema: what a client unmarshals a structured
// output into.
type pet struct {
	Name    string `json:"name"`
	Species string `json:"species"`
	Age     int    `json:"age"`
}

// petSchema bounds every field, so that even the stories model, which
// would rather tell a story, ends its object within max_tokens.
var petSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"name":    map[string]any{"type": "string", "minLength": 1, "maxLength": 10},
		"species": map[string]any{"enum": []string{"cat", "dog", "bird"}},
		"age":     map[string]any{"type": "integer", "minimum": 0, "maximum": 30},
	},
	"required":             []string{"name", "species", "age"},
	"additionalProperties": false,
}

// testStructuredOutput asks through the SDK for output following a JSON
// schema and unmarshals it into the schema's Go struct; a schema the
// server cannot enforce is refused with 400 naming response_format.
func testStructuredOutput(t *testing.T, m *mesh) {
	for _, seed := range []int64{1, 2, 3} {
		p := m.greedy(story, 128)
		p.Temperature, p.Seed = sdk.Float(1), sdk.Int(seed)
		p.ResponseFormat = sdk.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "pet", Schema: petSchema, Strict: sdk.Bool(true)},
		}}
		res := m.complete(t, p)
		ch := res.Choices[0]
		var got pet
		dec := json.NewDecoder(strings.NewReader(ch.Message.Content))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil || ch.FinishReason != "stop" {
			t.Fatalf("seed %d: %q (finish %s) does not decode into the schema's struct: %v", seed, ch.Message.Content, ch.FinishReason, err)
		}
		if got.Name == "" || len([]rune(got.Name)) > 10 || (got.Species != "cat" && got.Species != "dog" && got.Species != "bird") || got.Age < 0 || got.Age > 30 {
			t.Errorf("seed %d: %+v breaks the schema", seed, got)
		}
	}

	p := m.greedy(story, 16)
	p.ResponseFormat = sdk.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}}
	if ch := m.complete(t, p).Choices[0]; len(ch.Message.Content) == 0 || ch.Message.Content[0] != '{' {
		t.Errorf("json_object: %q does not start an object", ch.Message.Content)
	}

	p = m.greedy(story, 16)
	p.ResponseFormat = sdk.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
		JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "bad", Schema: map[string]any{"$ref": "#/$defs/missing"}},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := m.client()
	_, err := c.Chat.Completions.New(ctx, p)
	var apiErr *sdk.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "response_format" || apiErr.Type != "invalid_request_error" {
		t.Errorf("unenforceable schema: %v, want 400 invalid_request_error naming response_format", err)
	}
}

// testLogprobs asks for logprobs, streamed and not: one entry per token,
// whose bytes spell the text; under greedy decoding the drawn token is the
// most likely of the alternatives.
func testLogprobs(t *testing.T, m *mesh) {
	const max = 24
	p := m.greedy(story, max)
	p.Logprobs, p.TopLogprobs = sdk.Bool(true), sdk.Int(3)
	res := m.complete(t, p)
	ch := res.Choices[0]
	checkLogprobs(t, "non-streamed", ch.Logprobs.Content, ch.Message.Content, int(res.Usage.CompletionTokens))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := m.client()
	s := readStream(c.Chat.Completions.NewStreaming(ctx, p), nil)
	if s.err != nil {
		t.Fatalf("stream: %v", s.err)
	}
	checkLogprobs(t, "streamed", s.logprobs, s.text, int(res.Usage.CompletionTokens))
	for i := range min(len(s.logprobs), len(ch.Logprobs.Content)) {
		if a, b := s.logprobs[i], ch.Logprobs.Content[i]; a.Token != b.Token || a.Logprob != b.Logprob {
			t.Errorf("token %d: streamed %q %v, non-streamed %q %v", i, a.Token, a.Logprob, b.Token, b.Logprob)
		}
	}
}

func checkLogprobs(t *testing.T, what string, lps []sdk.ChatCompletionTokenLogprob, text string, tokens int) {
	t.Helper()
	if len(lps) != tokens {
		t.Fatalf("%s: %d logprobs for %d tokens", what, len(lps), tokens)
	}
	var spelt []byte
	for i, lp := range lps {
		for _, b := range lp.Bytes {
			spelt = append(spelt, byte(b))
		}
		if len(lp.TopLogprobs) != 3 || lp.Logprob > 0 || math.Abs(lp.Logprob-lp.TopLogprobs[0].Logprob) > 1e-5 ||
			lp.TopLogprobs[1].Logprob > lp.TopLogprobs[0].Logprob || lp.TopLogprobs[2].Logprob > lp.TopLogprobs[1].Logprob {
			t.Errorf("%s: token %d: %s", what, i, lp.RawJSON())
		}
	}
	if string(spelt) != text {
		t.Errorf("%s: the tokens spell %q, the text is %q", what, spelt, text)
	}
}
