package engine

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/slm-mesh/slm-mesh/internal/chat"
	"github.com/slm-mesh/slm-mesh/internal/model/ggufgen"
	"github.com/slm-mesh/slm-mesh/internal/modeltest"
)

func TestCommonPrefix(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		a, b []int
		want int
	}{
		{nil, nil, 0},
		{nil, []int{1}, 0},
		{[]int{1, 2, 3}, []int{1, 2, 3}, 3},
		{[]int{1, 2, 3}, []int{1, 2}, 2},
		{[]int{1, 2}, []int{1, 2, 3}, 2},
		{[]int{1, 2, 3}, []int{1, 5, 3}, 1},
		{[]int{4}, []int{1}, 0},
	} {
		if got := commonPrefix(c.a, c.b); got != c.want {
			t.Errorf("commonPrefix(%v, %v) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

// turn is one request of a scripted conversation: the user's message, and
// whether it replaces the last exchange (a client editing its last turn,
// which makes the engine cut the cached conversation far back).
type turn struct {
	conv   int // which conversation
	user   string
	branch bool
}

// script runs the turns one at a time, greedily, each conversation
// re-sending its whole history as a chat client does, and returns each
// turn's text and result.
func script(t *testing.T, e *Engine, system string, turns []turn, maxTokens int) ([]string, []chat.Result) {
	t.Helper()
	history := map[int][]chat.Message{}
	var texts []string
	var results []chat.Result
	for _, tr := range turns {
		h := history[tr.conv]
		if len(h) == 0 && system != "" {
			h = []chat.Message{{Role: chat.RoleSystem, Content: system}}
		}
		if tr.branch {
			h = h[:len(h)-2]
		}
		h = append(h, chat.Message{Role: chat.RoleUser, Content: tr.user})
		text, res := generate(t, e, Request{Request: chat.Request{Messages: slices.Clone(h), MaxTokens: maxTokens, Temperature: f32(0)}})
		history[tr.conv] = append(h, chat.Message{Role: chat.RoleAssistant, Content: text})
		texts, results = append(texts, text), append(results, res)
	}
	return texts, results
}

// conversationTurns: two conversations taking turns on two slots, a third
// that evicts one of them, an edited turn, and the evicted one coming back.
func conversationTurns() []turn {
	var turns []turn
	for i := range 4 {
		turns = append(turns,
			turn{conv: 0, user: fmt.Sprintf("Tell me about the fox number %d and the river.", i)},
			turn{conv: 1, user: fmt.Sprintf("What did the little bird %d sing at night?", i)})
	}
	return append(turns,
		turn{conv: 2, user: "Once there was a cat who lived in a big house."},
		turn{conv: 0, user: "And then what did the fox do?", branch: true},
		turn{conv: 2, user: "The cat liked milk."},
		turn{conv: 1, user: "Sing it again."},
	)
}

// TestPromptCacheExact: greedy output with prompt reuse equals output
// without it, token for token, over multi-turn conversations that hit,
// miss, evict and cut back the cache; and the hits are counted.
func TestPromptCacheExact(t *testing.T) {
	system := strings.Repeat("You are a kind storyteller who answers briefly. ", 4)
	for _, m := range []struct {
		name string
		open func(Config) *Engine
	}{
		{"stories260K", func(c Config) *Engine { return openStories(t, c) }},
		// A window of 8 tokens: each turn moves the conversation well
		// past it, so the sliding-window layers see cells outside their
		// window when a turn is cut back.
		{"gemma3-window8", func(c Config) *Engine { return openGemmaWindow(t, c, 8) }},
	} {
		t.Run(m.name, func(t *testing.T) {
			turns := conversationTurns()
			reuse := m.open(Config{Parallel: 2, ContextPerSeq: 512})
			fresh := m.open(Config{Parallel: 2, ContextPerSeq: 512, NoPromptCache: true})
			got, gotRes := script(t, reuse, system, turns, 24)
			want, wantRes := script(t, fresh, system, turns, 24)
			var cached int
			for i := range turns {
				if got[i] != want[i] || gotRes[i].CompletionTokens != wantRes[i].CompletionTokens || gotRes[i].PromptTokens != wantRes[i].PromptTokens {
					t.Errorf("turn %d (conversation %d): with reuse %q (%+v)\nwithout %q (%+v)", i, turns[i].conv, got[i], gotRes[i], want[i], wantRes[i])
				}
				if wantRes[i].CachedTokens != 0 {
					t.Errorf("turn %d: %d cached tokens with reuse off", i, wantRes[i].CachedTokens)
				}
				cached += gotRes[i].CachedTokens
				t.Logf("turn %d conv %d: prompt %d, cached %d, completion %d", i, turns[i].conv, gotRes[i].PromptTokens, gotRes[i].CachedTokens, gotRes[i].CompletionTokens)
			}
			// Conversation 1 takes the empty slot rather than conversation
			// 0's, though they share the system prompt; from then on each
			// turn of both finds the whole previous turn's prompt cached.
			if gotRes[1].CachedTokens != 0 {
				t.Errorf("conversation 1's first turn: %d cached, want 0 (it goes to the empty slot)", gotRes[1].CachedTokens)
			}
			for i := 2; i < 8; i++ {
				if prev := gotRes[i-2].PromptTokens; gotRes[i].CachedTokens < prev {
					t.Errorf("turn %d: %d cached, want at least the previous turn's %d prompt tokens", i, gotRes[i].CachedTokens, prev)
				}
			}
			// With both slots taken, conversation 2 evicts the least
			// recently used one and finds the system prompt there.
			if gotRes[8].CachedTokens == 0 {
				t.Errorf("conversation 2's first turn: nothing cached, want the system prompt")
			}
			st := reuse.Stats()
			if st.CachedTokens != uint64(cached) || st.PromptTokens == 0 || st.CachedTokens >= st.PromptTokens {
				t.Errorf("stats: %d of %d prompt tokens cached, want %d of more", st.CachedTokens, st.PromptTokens, cached)
			}
			if fs := fresh.Stats(); fs.CachedTokens != 0 {
				t.Errorf("stats with reuse off: %d cached tokens", fs.CachedTokens)
			}
		})
	}
}

// TestPromptCacheNextTurn: a turn re-sending a short prompt and a long
// answer goes to the slot holding them, though the answer (generated
// tokens, not all of them the tokens its text gives back) is most of the
// cache; a new conversation goes to the empty slot.
func TestPromptCacheNextTurn(t *testing.T) {
	t.Parallel()
	e := openStories(t, Config{Parallel: 2})
	conv := []turn{{user: "Tom had a red ball."}, {user: "Then he went home."}, {conv: 1, user: "Tom had a blue hat."}, {user: "He slept."}}
	_, res := script(t, e, "", conv, 48)
	for i, want := range []struct{ min, max int }{
		{0, 0},
		{res[0].PromptTokens, res[1].PromptTokens - 1},
		{0, 0},
		{res[1].PromptTokens, res[3].PromptTokens - 1},
	} {
		if n := res[i].CachedTokens; n < want.min || n > want.max {
			t.Errorf("turn %d: %d of %d prompt tokens cached, want %d to %d", i, n, res[i].PromptTokens, want.min, want.max)
		}
	}
}

// TestPromptCacheOwnSlot: a conversation replayed from its start (the same
// turns again) finds its own slot, though another slot holding the first
// run shares a longer prefix with it: that one holds a longer
// conversation, which the replay would cut.
func TestPromptCacheOwnSlot(t *testing.T) {
	t.Parallel()
	e := openStories(t, Config{Parallel: 3})
	conv := []turn{{user: "Tom had a red ball."}, {user: "Then he went home."}, {user: "He slept."}}
	_, first := script(t, e, "", conv, 24)
	_, replay := script(t, e, "", conv[:2], 24)
	// The replay's first turn goes to an empty slot (the first run's
	// slot holds three turns); its second turn continues it there.
	if replay[0].CachedTokens != 0 {
		t.Errorf("replayed turn 1: %d cached, want 0 (an empty slot)", replay[0].CachedTokens)
	}
	if replay[1].CachedTokens < first[0].PromptTokens {
		t.Errorf("replayed turn 2: %d of %d prompt tokens cached, want at least turn 1's %d", replay[1].CachedTokens, replay[1].PromptTokens, first[0].PromptTokens)
	}
}

// openGemmaWindow opens a generated tiny gemma3 whose local layers attend
// to window tokens.
func openGemmaWindow(t testing.TB, c Config, window int) *Engine {
	t.Helper()
	c.ModelPath, c.Threads = modeltest.Tiny(t, func(g *ggufgen.Config) { g.SlidingWindow = window }), 1
	c.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr})
	e, err := Open(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}
