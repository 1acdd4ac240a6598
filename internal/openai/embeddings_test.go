package openai

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

func TestDecodeEmbeddingRequestValid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		body   string
		inputs []chat.EmbedInput
		format string
		dims   int
	}{
		{`{"model":"m","input":"hello"}`, []chat.EmbedInput{{Text: "hello"}}, "float", 0},
		{`{"input":["a","b"],"encoding_format":"base64"}`, []chat.EmbedInput{{Text: "a"}, {Text: "b"}}, "base64", 0},
		{`{"input":[1,2,3],"dimensions":8}`, []chat.EmbedInput{{Tokens: []int{1, 2, 3}}}, "float", 8},
		{`{"input":[[1,2],[3]],"encoding_format":"float","user":"u"}`, []chat.EmbedInput{{Tokens: []int{1, 2}}, {Tokens: []int{3}}}, "float", 0},
	} {
		r, e := DecodeEmbeddingRequest([]byte(tc.body), Limits{})
		if e != nil {
			t.Errorf("%s: %v", tc.body, e)
			continue
		}
		if !reflect.DeepEqual(r.Inputs, tc.inputs) || r.EncodingFormat != tc.format || r.Dimensions != tc.dims {
			t.Errorf("%s: got %+v", tc.body, r)
		}
	}
}

func TestDecodeEmbeddingRequestInvalid(t *testing.T) {
	t.Parallel()
	many := `"` + strings.Repeat(`x","`, chat.MaxEmbedInputs) + `x"`
	for _, tc := range []struct {
		body, param string
		status      int
	}{
		{`{"model":"m"}`, "input", 400},
		{`{"input":null}`, "input", 400},
		{`{"input":""}`, "input", 400},
		{`{"input":[]}`, "input", 400},
		{`{"input":{}}`, "input", 400},
		{`{"input":3}`, "input", 400},
		{`{"input":["a",""]}`, "input[1]", 400},
		{`{"input":["a",1]}`, "input[1]", 400},
		{`{"input":[[1],"a"]}`, "input[1]", 400},
		{`{"input":[[1],[]]}`, "input[1]", 400},
		{`{"input":[[1],[1.5]]}`, "input[1]", 400},
		{`{"input":[1,"a"]}`, "input", 400},
		{`{"input":[1.5]}`, "input", 400},
		{`{"input":[` + many + `]}`, "input", 400},
		{`{"input":"a","encoding_format":"int8"}`, "encoding_format", 400},
		{`{"input":"a","dimensions":0}`, "dimensions", 400},
		{`{"input":"a","dimensions":"8"}`, "dimensions", 400},
		{`{"input":"a","extra":1}`, "extra", 400},
		{`[1]`, "", 400},
		{`{`, "", 400},
		{`{"input":"` + strings.Repeat("x", 300) + `"}`, "", 413},
	} {
		_, e := DecodeEmbeddingRequest([]byte(tc.body), Limits{MaxBodyBytes: 256 + 2048*4})
		if len(tc.body) > 300 && tc.status == 413 {
			_, e = DecodeEmbeddingRequest([]byte(tc.body), Limits{MaxBodyBytes: 256})
		}
		if e == nil || e.Param != tc.param || e.Status != tc.status || e.Type != TypeInvalidRequest {
			t.Errorf("%.80s: error %+v, want %d naming %q", tc.body, e, tc.status, tc.param)
		}
	}
}

// The response is OpenAI's list, floats or base64 of little-endian
// float32 values.
func TestEmbeddingList(t *testing.T) {
	t.Parallel()
	res := chat.EmbedResult{Model: "emb", Embeddings: [][]float32{{1, -0.5}, {0.25, 3}}, PromptTokens: 7}
	b, err := json.Marshal(NewEmbeddingList(res, EncodingFloat, "asked"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[1,-0.5]},{"object":"embedding","index":1,"embedding":[0.25,3]}],"model":"emb","usage":{"prompt_tokens":7,"total_tokens":7}}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	l := NewEmbeddingList(res, EncodingBase64, "asked")
	// 1.0 and -0.5 as little-endian float32: 00 00 80 3f, 00 00 00 bf.
	if s := l.Data[0].Embedding.(string); s != "AACAPwAAAL8=" {
		t.Errorf("base64 %q", s)
	}
	v, err := DecodeBase64(l.Data[1].Embedding.(string))
	if err != nil || !reflect.DeepEqual(v, res.Embeddings[1]) {
		t.Errorf("decoded %v, %v", v, err)
	}
}

// FuzzDecodeEmbeddingRequest: any body gives a request or a 400/413, never
// a panic, and an accepted request holds at least one input, none empty.
func FuzzDecodeEmbeddingRequest(f *testing.F) {
	for _, s := range []string{`{"input":"a"}`, `{"input":[[1,2],[3]]}`, `{"input":["a","b"],"dimensions":4,"encoding_format":"base64"}`, `{"input":[1,2]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, e := DecodeEmbeddingRequest(body, fuzzLimits)
		if (r == nil) == (e == nil) {
			t.Fatalf("got request %v and error %v", r, e)
		}
		if e != nil {
			if e.Status != http.StatusBadRequest && e.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d: %v", e.Status, e)
			}
			return
		}
		if len(r.Inputs) == 0 || len(r.Inputs) > chat.MaxEmbedInputs {
			t.Fatalf("%d inputs", len(r.Inputs))
		}
		for i, in := range r.Inputs {
			if in.Text == "" && len(in.Tokens) == 0 {
				t.Fatalf("input %d empty", i)
			}
		}
	})
}
