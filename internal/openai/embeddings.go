package openai

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/slm-mesh/slm-mesh/internal/chat"
)

// Encoding formats of embeddings, as the OpenAI API names them.
const (
	EncodingFloat  = "float"  // a JSON array of numbers, the default
	EncodingBase64 = "base64" // little-endian float32 values, base64
)

// ObjectEmbedding is the "object" of one embedding.
const ObjectEmbedding = "embedding"

// EmbeddingRequest is a decoded and validated /v1/embeddings request.
type EmbeddingRequest struct {
	chat.EmbedRequest
	// EncodingFormat is EncodingFloat or EncodingBase64.
	EncodingFormat string
	// User is the client's end-user id, for logs.
	User string
}

// wireEmbeddingRequest is the JSON body as sent; input, whose type
// varies, is decoded by hand (decodeEmbedInput).
type wireEmbeddingRequest struct {
	Input          json.RawMessage `json:"input"`
	Model          string          `json:"model"`
	EncodingFormat *string         `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
	User           string          `json:"user"`
}

var knownEmbeddingFields = jsonFields[wireEmbeddingRequest]()

// DecodeEmbeddingRequest decodes and validates an embeddings request
// body: input a string, an array of strings, an array of token ids or an
// array of arrays of token ids (at most chat.MaxEmbedInputs, none empty);
// encoding_format float or base64; dimensions at least 1 (the model's
// width is the engine's to check). It returns the request or an *Error
// (400, or 413 past lim.MaxBodyBytes) naming the field. lim.MaxChars, when
// set, bounds the characters of all texts together.
func DecodeEmbeddingRequest(body []byte, lim Limits) (*EmbeddingRequest, *Error) {
	if lim.MaxBodyBytes > 0 && int64(len(body)) > lim.MaxBodyBytes {
		return nil, BodyTooLarge(lim.MaxBodyBytes)
	}
	if !utf8.Valid(body) {
		return nil, InvalidRequest("", "The request body is not valid UTF-8. Send JSON encoded as UTF-8.")
	}
	if e := checkFields(body, knownEmbeddingFields); e != nil {
		return nil, e
	}
	var w wireEmbeddingRequest
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, decodeError("", err)
	}
	inputs, e := decodeEmbedInput(w.Input)
	if e != nil {
		return nil, e
	}
	if lim.MaxChars > 0 {
		chars := 0
		for _, in := range inputs {
			chars += utf8.RuneCountInString(in.Text)
		}
		if chars > lim.MaxChars {
			return nil, InvalidRequest("input", fmt.Sprintf("The input is too long: %d characters, the limit is %d.", chars, lim.MaxChars))
		}
	}
	r := &EmbeddingRequest{EmbedRequest: chat.EmbedRequest{Model: w.Model, Inputs: inputs}, EncodingFormat: EncodingFloat, User: w.User}
	if f := w.EncodingFormat; f != nil {
		if *f != EncodingFloat && *f != EncodingBase64 {
			return nil, InvalidRequest("encoding_format", fmt.Sprintf(
				"Invalid value for 'encoding_format': %q; supported values are 'float' and 'base64'.", *f))
		}
		r.EncodingFormat = *f
	}
	if d := w.Dimensions; d != nil {
		if *d < 1 {
			return nil, InvalidRequest("dimensions", fmt.Sprintf("Invalid 'dimensions': must be at least 1, got %d.", *d))
		}
		r.Dimensions = *d
	}
	if err := r.Validate(); err != nil {
		return nil, FromError(err)
	}
	return r, nil
}

// decodeEmbedInput reads input: a string, or an array of strings, of
// token ids (one input) or of arrays of token ids.
func decodeEmbedInput(raw json.RawMessage) ([]chat.EmbedInput, *Error) {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return nil, InvalidRequest("input", "Missing required parameter: 'input'.")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, decodeError("input", err)
		}
		if s == "" {
			return nil, InvalidRequest("input", "Invalid 'input': an input may not be empty.")
		}
		return []chat.EmbedInput{{Text: s}}, nil
	case '[':
	default:
		return nil, InvalidRequest("input", fmt.Sprintf(
			"Invalid type for 'input': expected a string or an array, but got %s.", jsonKind(raw)))
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, decodeError("input", err)
	}
	if len(items) == 0 {
		return nil, InvalidRequest("input", "Invalid 'input': must be a non-empty array.")
	}
	if len(items) > chat.MaxEmbedInputs {
		return nil, InvalidRequest("input", fmt.Sprintf("Invalid 'input': %d inputs, the limit is %d.", len(items), chat.MaxEmbedInputs))
	}
	// The first element says which of the three arrays this is; every
	// other must be of its kind.
	first := bytes.TrimSpace(items[0])
	if len(first) > 0 && first[0] != '"' && first[0] != '[' {
		// An array of token ids: one input.
		var toks []int
		if err := json.Unmarshal(raw, &toks); err != nil {
			return nil, InvalidRequest("input", "Invalid 'input': an array of token ids must hold integers only.")
		}
		return []chat.EmbedInput{{Tokens: toks}}, nil
	}
	out := make([]chat.EmbedInput, len(items))
	for i, item := range items {
		path := fmt.Sprintf("input[%d]", i)
		item = bytes.TrimSpace(item)
		if len(item) == 0 || item[0] != first[0] {
			return nil, InvalidRequest(path, fmt.Sprintf(
				"Invalid type for '%s': expected %s like input[0], but got %s.", path, jsonKind(first), jsonKind(item)))
		}
		if item[0] == '"' {
			if err := json.Unmarshal(item, &out[i].Text); err != nil {
				return nil, decodeError(path, err)
			}
			continue
		}
		if err := json.Unmarshal(item, &out[i].Tokens); err != nil {
			return nil, InvalidRequest(path, fmt.Sprintf("Invalid '%s': an array of token ids must hold integers only.", path))
		}
	}
	for i, in := range out {
		if in.Text == "" && len(in.Tokens) == 0 {
			return nil, InvalidRequest(fmt.Sprintf("input[%d]", i), fmt.Sprintf("Invalid 'input[%d]': an input may not be empty.", i))
		}
	}
	return out, nil
}

// EmbeddingList is the response to /v1/embeddings.
type EmbeddingList struct {
	Object string         `json:"object"` // "list"
	Data   []Embedding    `json:"data"`
	Model  string         `json:"model"`
	Usage  EmbeddingUsage `json:"usage"`
}

// Embedding is one input's embedding: Embedding holds a []float32, or its
// base64 string.
type Embedding struct {
	Object    string `json:"object"` // "embedding"
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

// EmbeddingUsage counts the tokens of the inputs.
type EmbeddingUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// NewEmbeddingList is the response holding res's embeddings in format
// (EncodingFloat or EncodingBase64); model is reported when res names
// none.
func NewEmbeddingList(res chat.EmbedResult, format, model string) EmbeddingList {
	out := EmbeddingList{Object: ObjectList, Data: make([]Embedding, len(res.Embeddings)),
		Model: res.Model, Usage: EmbeddingUsage{PromptTokens: res.PromptTokens, TotalTokens: res.PromptTokens}}
	if out.Model == "" {
		out.Model = model
	}
	for i, v := range res.Embeddings {
		var e any = v
		if format == EncodingBase64 {
			e = EncodeBase64(v)
		}
		out.Data[i] = Embedding{Object: ObjectEmbedding, Index: i, Embedding: e}
	}
	return out
}

// EncodeBase64 is v as OpenAI's base64 encoding_format sends it: its
// float32 values little-endian, in standard base64.
func EncodeBase64(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// DecodeBase64 reads what EncodeBase64 writes.
func DecodeBase64(s string) ([]float32, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("%d bytes are not float32 values", len(b))
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v, nil
}
