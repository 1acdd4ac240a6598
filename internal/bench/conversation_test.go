package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConversation runs the multi-turn workload against a fake server
// (an httptest server speaking the chat API's stream, as TestStream...
// does) that reports every prompt token but the last turn's messages as
// cached: each turn re-sends the history with the previous answer, and the
// tables show the hit ratio.
func TestConversation(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got [][]Message
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Messages []Message }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, req.Messages)
		mu.Unlock()
		words := 0
		for _, m := range req.Messages {
			words += len(strings.Fields(m.Content))
		}
		last := len(strings.Fields(req.Messages[len(req.Messages)-1].Content))
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"answer %d\"}}]}\n\n", len(req.Messages))
		fmt.Fprintf(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":%d}}}\n\ndata: [DONE]\n\n",
			words, words-last)
	}))
	t.Cleanup(srv.Close)

	c := &Client{BaseURL: srv.URL, Timeout: 10 * time.Second}
	plan := ConversationPlan{SystemWords: 10, Turns: 3, TurnWords: 5, MaxTokens: 2, Conversations: 2, Rounds: 1}
	var out, progress bytes.Buffer
	res, err := RunConversations(context.Background(), &out, &progress, plan, []Endpoint{{Name: "A", Client: c}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res[0]) != 6 || len(got) != 6 {
		t.Fatalf("%d samples, %d requests; want 6 of each", len(res[0]), len(got))
	}
	for _, msgs := range got {
		// system, then user/assistant pairs, ending with a user message.
		if msgs[0].Role != "system" || len(msgs)%2 != 0 || msgs[len(msgs)-1].Role != "user" {
			t.Fatalf("messages %+v", msgs)
		}
		for i := 2; i < len(msgs); i += 2 {
			if msgs[i].Role != "assistant" || msgs[i].Content != fmt.Sprintf("answer %d", i) {
				t.Fatalf("message %d is %+v; want the answer to the turn before", i, msgs[i])
			}
		}
	}
	// Turns 1, 2, 3 of each conversation: 15, 22, 29 prompt words, of which
	// 10, 17, 24 cached: 102 of 132.
	for _, want := range []string{"| 1 |", "77.3%", "| A |"} {
		if !strings.Contains(strings.Join(strings.Fields(out.String()), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("tables lack %q:\n%s", want, out.String())
		}
	}
}

// TestPause: think times stay within [0, ThinkTime), are the same on a
// repeated run, differ between conversations (so they drift out of step),
// and are zero without ThinkTime.
func TestPause(t *testing.T) {
	t.Parallel()
	plan := ConversationPlan{ThinkTime: time.Second, Seed: 3}
	seen := map[time.Duration]bool{}
	for id := range 16 {
		d := plan.Pause(id, 1)
		if d < 0 || d >= plan.ThinkTime {
			t.Fatalf("Pause(%d, 1) = %s, outside [0, %s)", id, d, plan.ThinkTime)
		}
		if again := plan.Pause(id, 1); again != d {
			t.Fatalf("Pause(%d, 1) = %s, then %s", id, d, again)
		}
		seen[d] = true
	}
	if len(seen) < 12 {
		t.Errorf("16 conversations drew only %d distinct pauses", len(seen))
	}
	if d := (ConversationPlan{}).Pause(5, 2); d != 0 {
		t.Errorf("Pause without ThinkTime = %s", d)
	}
}
