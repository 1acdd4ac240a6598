package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

// forecast is the arguments of the get_forecast tool, as a client
// unmarshals them.
type forecast struct {
	City string `json:"city"`
	Unit string `json:"unit"`
	Days int    `json:"days"`
}

// forecastTool bounds every argument, so that the random-weight model,
// which only the grammar shapes, ends its call within max_tokens.
var forecastTool = sdk.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
	Name:        "get_forecast",
	Description: sdk.String("The weather to come at a place."),
	Parameters: shared.FunctionParameters{
		"type": "object",
		"properties": map[string]any{
			"city": map[string]any{"type": "string", "minLength": 1, "maxLength": 10},
			"unit": map[string]any{"enum": []string{"celsius", "fahrenheit"}},
			"days": map[string]any{"type": "integer", "minimum": 1, "maximum": 7},
		},
		"required":             []string{"city", "unit", "days"},
		"additionalProperties": false,
	},
	Strict: sdk.Bool(true),
})

var nowTool = sdk.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "now", Description: sdk.String("The time.")})

// checkForecastCall fails t unless c calls get_forecast with arguments
// its schema admits.
func checkForecastCall(t *testing.T, c sdk.ChatCompletionMessageToolCallUnion) {
	t.Helper()
	if !strings.HasPrefix(c.ID, "call_") || c.Type != "function" || c.Function.Name != "get_forecast" {
		t.Fatalf("call %s", c.RawJSON())
	}
	var f forecast
	dec := json.NewDecoder(strings.NewReader(c.Function.Arguments))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("arguments %q do not decode into the schema's struct: %v", c.Function.Arguments, err)
	}
	if n := len([]rune(f.City)); n < 1 || n > 10 || (f.Unit != "celsius" && f.Unit != "fahrenheit") || f.Days < 1 || f.Days > 7 {
		t.Errorf("arguments %+v break the schema", f)
	}
}

// TestToolCalls runs function calling through the real gateway, caller
// and inference on the random-weight FunctionGemma model, with the OpenAI
// SDK: a call, its result sent back and the answer; the same streamed.
// Random weights never choose to call, so the calls are forced with
// tool_choice (a grammar), as a client may force them.
func TestToolCalls(t *testing.T) {
	t.Parallel()
	m := startMesh(t, localmesh.Config{Model: modeltest.Preset(t, ggufgen.PresetFunctionGemmaTiny), Parallel: 2, Ctx: 1024})
	question := sdk.UserMessage("What will the weather be in Paris?")
	ask := func(seed int64) sdk.ChatCompletionNewParams {
		return sdk.ChatCompletionNewParams{
			Model:               m.model,
			Messages:            []sdk.ChatCompletionMessageParamUnion{question},
			Tools:               []sdk.ChatCompletionToolUnionParam{forecastTool, nowTool},
			ToolChoice:          sdk.ToolChoiceOptionFunctionToolChoice(sdk.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_forecast"}),
			ParallelToolCalls:   sdk.Bool(false),
			MaxCompletionTokens: sdk.Int(200),
			Temperature:         sdk.Float(1),
			Seed:                sdk.Int(seed),
		}
	}

	t.Run("RoundTrip", func(t *testing.T) {
		res := m.complete(t, ask(1))
		ch := res.Choices[0]
		if ch.FinishReason != "tool_calls" || ch.Message.JSON.Content.Valid() || len(ch.Message.ToolCalls) != 1 {
			t.Fatalf("reply %s: want one call, content null, finish_reason tool_calls", ch.RawJSON())
		}
		call := ch.Message.ToolCalls[0]
		checkForecastCall(t, call)
		if u := res.Usage; u.CompletionTokens <= 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
			t.Errorf("usage %s", u.RawJSON())
		}

		// The result goes back; the model answers in text (tool_choice
		// none) or calls again (required).
		p := ask(2)
		p.Messages = append(p.Messages, ch.Message.ToParam(), sdk.ToolMessage(`{"temperature":15,"sky":"clear"}`, call.ID))
		p.ToolChoice = sdk.ChatCompletionToolChoiceOptionUnionParam{OfAuto: sdk.String("none")}
		p.MaxCompletionTokens = sdk.Int(16)
		answer := m.complete(t, p).Choices[0]
		if len(answer.Message.ToolCalls) != 0 || (answer.FinishReason != "stop" && answer.FinishReason != "length") {
			t.Errorf("answer %s: want text", answer.RawJSON())
		}
		p.ToolChoice = sdk.ChatCompletionToolChoiceOptionUnionParam{OfAuto: sdk.String("required")}
		p.MaxCompletionTokens = sdk.Int(200)
		again := m.complete(t, p)
		if c := again.Choices[0]; c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 {
			t.Errorf("second call %s", c.RawJSON())
		} else if c.Message.ToolCalls[0].Function.Name == "get_forecast" {
			checkForecastCall(t, c.Message.ToolCalls[0])
		}
		if again.Usage.PromptTokensDetails.CachedTokens == 0 {
			t.Logf("the second turn found nothing of the first in the cache: %s", again.Usage.RawJSON())
		}
	})

	t.Run("Streaming", func(t *testing.T) {
		p := ask(3)
		p.StreamOptions = sdk.ChatCompletionStreamOptionsParam{IncludeUsage: sdk.Bool(true)}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := m.client()
		stream := c.Chat.Completions.NewStreaming(ctx, p)
		defer stream.Close()
		var acc sdk.ChatCompletionAccumulator
		var pieces []sdk.ChatCompletionChunkChoiceDeltaToolCall
		var finished []sdk.FinishedChatCompletionToolCall
		for stream.Next() {
			chunk := stream.Current()
			if !acc.AddChunk(chunk) {
				t.Fatalf("the accumulator refused %s", chunk.RawJSON())
			}
			for _, ch := range chunk.Choices {
				pieces = append(pieces, ch.Delta.ToolCalls...)
			}
			if tc, ok := acc.JustFinishedToolCall(); ok {
				finished = append(finished, tc)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		// The first piece names the call, the next carry its arguments.
		if len(pieces) < 2 || pieces[0].ID == "" || pieces[0].Type != "function" || pieces[0].Function.Name != "get_forecast" ||
			pieces[0].Function.Arguments != "" || pieces[1].ID != "" || pieces[1].Function.Arguments == "" {
			t.Fatalf("tool call pieces %+v", pieces)
		}
		for _, pc := range pieces {
			if pc.Index != 0 {
				t.Errorf("piece of call %d, want only call 0", pc.Index)
			}
		}
		ch := acc.Choices[0]
		if ch.FinishReason != "tool_calls" || ch.Message.Content != "" || len(ch.Message.ToolCalls) != 1 {
			t.Fatalf("accumulated %s", acc.RawJSON())
		}
		checkForecastCall(t, ch.Message.ToolCalls[0])
		if len(finished) != 1 || finished[0].Name != "get_forecast" || finished[0].Arguments != ch.Message.ToolCalls[0].Function.Arguments {
			t.Errorf("JustFinishedToolCall reported %+v", finished)
		}
		if acc.Usage.CompletionTokens <= 0 {
			t.Errorf("usage %s", acc.Usage.RawJSON())
		}
	})

	t.Run("ParallelStreamed", func(t *testing.T) {
		// Required, parallel: one call or more, their pieces numbered
		// from 0 in order.
		p := ask(7)
		p.ToolChoice = sdk.ChatCompletionToolChoiceOptionUnionParam{OfAuto: sdk.String("required")}
		p.ParallelToolCalls = sdk.Bool(true)
		p.MaxCompletionTokens = sdk.Int(600)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := m.client()
		stream := c.Chat.Completions.NewStreaming(ctx, p)
		defer stream.Close()
		var acc sdk.ChatCompletionAccumulator
		var indexes []int64
		for stream.Next() {
			chunk := stream.Current()
			acc.AddChunk(chunk)
			for _, ch := range chunk.Choices {
				for _, tc := range ch.Delta.ToolCalls {
					if len(indexes) == 0 || indexes[len(indexes)-1] != tc.Index {
						indexes = append(indexes, tc.Index)
					}
				}
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		calls := acc.Choices[0].Message.ToolCalls
		if len(calls) == 0 || len(indexes) != len(calls) || acc.Choices[0].FinishReason != "tool_calls" {
			t.Fatalf("indexes %v, accumulated %s", indexes, acc.RawJSON())
		}
		for i, idx := range indexes {
			if idx != int64(i) {
				t.Errorf("indexes %v, want 0, 1, ...", indexes)
			}
		}
		for _, call := range calls {
			if call.Function.Name == "get_forecast" {
				checkForecastCall(t, call)
			} else if call.Function.Name != "now" || call.Function.Arguments != "{}" {
				t.Errorf("call %s", call.RawJSON())
			}
		}
		t.Logf("%d calls", len(calls))
	})

	t.Run("BadTools", func(t *testing.T) {
		for _, tt := range []struct {
			name  string
			edit  func(*sdk.ChatCompletionNewParams)
			param string
		}{
			{"name", func(p *sdk.ChatCompletionNewParams) {
				p.Tools = []sdk.ChatCompletionToolUnionParam{sdk.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get forecast"})}
				p.ToolChoice = sdk.ChatCompletionToolChoiceOptionUnionParam{}
			}, "tools[0].function.name"},
			{"unknown function", func(p *sdk.ChatCompletionNewParams) {
				p.ToolChoice = sdk.ToolChoiceOptionFunctionToolChoice(sdk.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_news"})
			}, "tool_choice"},
			{"result of no call", func(p *sdk.ChatCompletionNewParams) {
				p.Messages = append(p.Messages, sdk.ToolMessage("15", "call_nowhere"))
			}, "messages[1].tool_call_id"},
		} {
			p := ask(1)
			tt.edit(&p)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			c := m.client()
			_, err := c.Chat.Completions.New(ctx, p)
			cancel()
			var apiErr *sdk.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Type != "invalid_request_error" || apiErr.Param != tt.param {
				t.Errorf("%s: %v, want 400 naming %s", tt.name, err, tt.param)
			}
		}
	})
}

// TestToolsUnsupportedModel: a model whose template knows no function
// calling (stories260K) refuses tools with 400, as ollama does.
func TestToolsUnsupportedModel(t *testing.T) {
	t.Parallel()
	m := startMesh(t, localmesh.Config{Parallel: 1})
	p := m.greedy(story, 8)
	p.Tools = []sdk.ChatCompletionToolUnionParam{forecastTool}
	for _, stream := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c := m.client()
		var err error
		if stream {
			s := c.Chat.Completions.NewStreaming(ctx, p)
			for s.Next() {
			}
			err = s.Err()
			s.Close()
		} else {
			_, err = c.Chat.Completions.New(ctx, p)
		}
		cancel()
		var apiErr *sdk.Error
		want := "model " + m.model + " does not support tools"
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Message != want || apiErr.Param != "tools" {
			t.Errorf("stream %v: %v, want 400 %q", stream, err, want)
		}
	}
	// Plain chat on the same model still works.
	if ch := m.complete(t, m.greedy(story, 8)).Choices[0]; ch.Message.Content == "" || slices.Contains([]string{"tool_calls"}, ch.FinishReason) {
		t.Errorf("plain chat %s", ch.RawJSON())
	}
}
