// Package functiongemma speaks FunctionGemma's function-calling format:
// Google's Gemma 3 270M fine-tune that declares tools, calls them and reads
// their results through control tokens inside Gemma turns.
//
//	<start_of_turn>developer
//	You are a model that can do function calling with the following functions<start_function_declaration>declaration:get_weather{description:<escape>Weather at a place.<escape>,parameters:{properties:{city:{type:<escape>STRING<escape>}},required:[<escape>city<escape>],type:<escape>OBJECT<escape>}}<end_function_declaration><end_of_turn>
//	<start_of_turn>user
//	Weather in Paris?<end_of_turn>
//	<start_of_turn>model
//	<start_function_call>call:get_weather{city:<escape>Paris<escape>}<end_function_call><start_function_response>response:get_weather{temperature:15}<end_function_response>It is 15 degrees in Paris.<end_of_turn>
//
// Every string value sits between two <escape> tokens, so that braces,
// commas and quotes inside it are text; numbers, booleans, objects and
// arrays are written bare. The model stops at <start_function_response>,
// the application appends the response, and the model goes on in the same
// turn.
//
// Render builds such prompts from OpenAI-shaped chat messages and tools,
// Parser turns the model's streamed output back into text and OpenAI tool
// calls, and Detect says whether a model speaks the format.
package functiongemma

// The format's control tokens. Each is one token of the model's vocabulary.
const (
	StartDeclaration = "<start_function_declaration>"
	EndDeclaration   = "<end_function_declaration>"
	StartCall        = "<start_function_call>"
	EndCall          = "<end_function_call>"
	StartResponse    = "<start_function_response>"
	EndResponse      = "<end_function_response>"
	Escape           = "<escape>"
)

// Gemma's turn markers, which FunctionGemma keeps.
const (
	startOfTurn = "<start_of_turn>"
	endOfTurn   = "<end_of_turn>"
)

// TriggerPhrase is the developer-turn sentence that, by Google's
// FunctionGemma guide, switches the model into function calling; the
// declarations follow it directly.
const TriggerPhrase = "You are a model that can do function calling with the following functions"

// Tokens lists the format's control tokens in a fixed order: the three
// pairs, then <escape>.
func Tokens() []string {
	return []string{StartDeclaration, EndDeclaration, StartCall, EndCall, StartResponse, EndResponse, Escape}
}

// StopStrings are the strings generation must stop at besides the model's
// end-of-generation tokens: the model asks for a function's result by
// writing <start_function_response>.
func StopStrings() []string { return []string{StartResponse} }
