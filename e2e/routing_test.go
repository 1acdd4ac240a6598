package e2e

import (
	"fmt"
	"testing"

	sdk "github.com/openai/openai-go/v3"

	"github.com/slm-mesh/slm-mesh/internal/localmesh"
)

// TestPrefixRouting runs two inference instances behind a caller that
// finds them in Consul. With prefix routing (the default) every turn of a
// conversation goes to the instance holding its earlier turns, so each
// turn finds the previous one's prompt in the KV cache; with least-busy,
// sequential turns alternate between the instances and a conversation's
// next turn mostly lands where nothing of it is cached.
func TestPrefixRouting(t *testing.T) {
	t.Parallel()
	for _, routing := range []string{"prefix", "least-busy"} {
		t.Run(routing, func(t *testing.T) {
			t.Parallel()
			m := startMesh(t, localmesh.Config{ConsulBin: consulBinary(t), Inference: 2, Parallel: 2,
				ExtraArgs: map[string][]string{"caller": {"-routing", routing}}})
			waitLive(t, m, 2)
			const turns = 3
			misses := 0
			// One conversation after the other, so that least-busy has no
			// load to go by and alternates.
			for conv := range 2 {
				p := m.greedy(fmt.Sprintf("Tom and his dog number %d went to the park", conv), 12)
				prev := int64(0)
				for turn := range turns {
					res := m.complete(t, p)
					cached := res.Usage.PromptTokensDetails.CachedTokens
					t.Logf("conversation %d turn %d: %d of %d prompt tokens cached", conv, turn, cached, res.Usage.PromptTokens)
					if turn > 0 && cached < prev-1 {
						misses++
					}
					prev = res.Usage.PromptTokens
					p.Messages = append(p.Messages, sdk.AssistantMessage(res.Choices[0].Message.Content), sdk.UserMessage("What happened next?"))
				}
			}
			switch {
			case routing == "prefix" && misses > 0:
				t.Errorf("%d turns did not find the previous turn cached, want none", misses)
			case routing == "least-busy" && misses == 0:
				t.Error("every turn found the previous one cached under least-busy; the test cannot tell routing apart")
			}
		})
	}
}
