package ggufgen

import "fmt"

// Token ids of the special tokens. Gemma's own vocabulary uses the same ids
// for the first four; the turn markers sit right after them here (at 105
// and 106 in Gemma's), and the file says so in tokenizer.ggml.eot_token_id.
const (
	PadID         = 0
	EOSID         = 1
	BOSID         = 2
	UnknownID     = 3
	StartOfTurnID = 4
	EndOfTurnID   = 5
	// FirstByteID is the id of <0x00>; the 256 byte tokens follow in order.
	FirstByteID = 6
)

// Token types as llama.cpp numbers them (enum llama_token_type).
const (
	typeNormal  int32 = 1
	typeUnknown int32 = 2
	typeControl int32 = 3
	typeByte    int32 = 6
)

// minVocab is the smallest vocabulary: the special and byte tokens, the
// word boundary "▁" and the printable ASCII characters.
const minVocab = FirstByteID + 256 + 1 + 94

// wordStart is SentencePiece's mark for a space, which starts a word.
const wordStart = "▁"

// Vocabulary is a SentencePiece ("llama") vocabulary as GGUF stores it.
type Vocabulary struct {
	Tokens []string
	Scores []float32
	Types  []int32
}

// NewVocabulary returns a Gemma-style vocabulary of size tokens: the
// special tokens, the 256 byte-fallback tokens <0x00>..<0xFF> (so that any
// text can be tokenized), the control tokens given (from FirstByteID+256
// on, in order), then filler pieces — "▁", the printable ASCII characters,
// and lower-case letter strings of growing length, each also as a word
// start. Every filler is the concatenation of two shorter ones, so
// SentencePiece's merges reach all of them.
func NewVocabulary(size int, control ...string) (Vocabulary, error) {
	if n := minVocab + len(control); size < n {
		return Vocabulary{}, fmt.Errorf("vocabulary of %d tokens: need at least %d", size, n)
	}
	v := Vocabulary{
		Tokens: make([]string, 0, size),
		Scores: make([]float32, 0, size),
		Types:  make([]int32, 0, size),
	}
	add := func(tok string, typ int32, score float32) {
		v.Tokens = append(v.Tokens, tok)
		v.Types = append(v.Types, typ)
		v.Scores = append(v.Scores, score)
	}
	add("<pad>", typeControl, 0)
	add("<eos>", typeControl, 0)
	add("<bos>", typeControl, 0)
	add("<unk>", typeUnknown, 0)
	add("<start_of_turn>", typeControl, 0)
	add("<end_of_turn>", typeControl, 0)
	for b := range 256 {
		add(fmt.Sprintf("<0x%02X>", b), typeByte, 0)
	}
	seen := make(map[string]bool, len(v.Tokens)+len(control))
	for _, tok := range v.Tokens {
		seen[tok] = true
	}
	for _, tok := range control {
		// Fillers never start with "<", so a control token spelled <...>
		// cannot collide with one.
		if len(tok) < 3 || tok[0] != '<' || tok[len(tok)-1] != '>' || seen[tok] {
			return Vocabulary{}, fmt.Errorf("control token %q: want distinct tokens spelled <...>", tok)
		}
		seen[tok] = true
		add(tok, typeControl, 0)
	}

	// Fillers score lower the later they come, as SentencePiece's log
	// probabilities do for rarer pieces.
	filler := func(tok string) bool {
		if len(v.Tokens) == size {
			return false
		}
		add(tok, typeNormal, -float32(len(v.Tokens)))
		return true
	}
	filler(wordStart)
	for c := '!'; c <= '~'; c++ {
		filler(string(c))
	}
	const letters = "abcdefghijklmnopqrstuvwxyz"
	for n := 1; len(v.Tokens) < size; n++ {
		// Count through all n-letter strings like an odometer.
		digits := make([]int, n)
		for {
			word := make([]byte, n)
			for i, d := range digits {
				word[i] = letters[d]
			}
			if !filler(wordStart+string(word)) || (n > 1 && !filler(string(word))) {
				break
			}
			i := n - 1
			for ; i >= 0; i-- {
				digits[i]++
				if digits[i] < len(letters) {
					break
				}
				digits[i] = 0
			}
			if i < 0 {
				break
			}
		}
	}
	return v, nil
}

// Gemma3ChatTemplate is the Jinja chat template Google publishes with the
// Gemma 3 instruction-tuned models (tokenizer_config.json), character for
// character: ollama's template package recognises a model's template by
// its distance to the ones it knows, and this text is at distance zero
// from its "gemma3-instruct". A system message becomes a prefix of the
// first user turn, since Gemma has no system role.
const Gemma3ChatTemplate = "{{ bos_token }}\n" +
	"{%- if messages[0]['role'] == 'system' -%}\n" +
	"    {%- if messages[0]['content'] is string -%}\n" +
	"        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n" +
	"    {%- else -%}\n" +
	"        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n" +
	"    {%- endif -%}\n" +
	"    {%- set loop_messages = messages[1:] -%}\n" +
	"{%- else -%}\n" +
	"    {%- set first_user_prefix = \"\" -%}\n" +
	"    {%- set loop_messages = messages -%}\n" +
	"{%- endif -%}\n" +
	"{%- for message in loop_messages -%}\n" +
	"    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n" +
	"        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n" +
	"    {%- endif -%}\n" +
	"    {%- if (message['role'] == 'assistant') -%}\n" +
	"        {%- set role = \"model\" -%}\n" +
	"    {%- else -%}\n" +
	"        {%- set role = message['role'] -%}\n" +
	"    {%- endif -%}\n" +
	"    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n" +
	"    {%- if message['content'] is string -%}\n" +
	"        {{ message['content'] | trim }}\n" +
	"    {%- elif message['content'] is iterable -%}\n" +
	"        {%- for item in message['content'] -%}\n" +
	"            {%- if item['type'] == 'image' -%}\n" +
	"                {{ '<start_of_image>' }}\n" +
	"            {%- elif item['type'] == 'text' -%}\n" +
	"                {{ item['text'] | trim }}\n" +
	"            {%- endif -%}\n" +
	"        {%- endfor -%}\n" +
	"    {%- else -%}\n" +
	"        {{ raise_exception(\"Invalid content type\") }}\n" +
	"    {%- endif -%}\n" +
	"    {{ '<end_of_turn>\n' }}\n" +
	"{%- endfor -%}\n" +
	"{%- if add_generation_prompt -%}\n" +
	"    {{'<start_of_turn>model\n'}}\n" +
	"{%- endif -%}\n"
