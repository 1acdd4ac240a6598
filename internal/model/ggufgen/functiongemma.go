package ggufgen

// FunctionGemmaChatTemplate is the Jinja chat template of the
// FunctionGemma presets. It renders what the functiongemma package's
// Render does, from Hugging Face-style messages and tools (arguments and
// tool results as objects): a developer turn with the system message, the
// trigger phrase and each tool's <start_function_declaration> block, calls
// and responses in the model's turn. For Google's weather example it
// writes the developer turn of Google's FunctionGemma guide byte for byte.
// It is this project's own text, not Google's file; what marks the model
// for functiongemma.Detect (the control tokens it writes) is the same.
const FunctionGemmaChatTemplate = `{{- bos_token -}}
{%- macro value(v) -%}
{%- if v is string -%}<escape>{{ v }}<escape>
{%- elif v is sameas true -%}true
{%- elif v is sameas false -%}false
{%- elif v is none -%}null
{%- elif v is mapping -%}{{ '{' }}{%- for k in v | sort -%}{{ k }}:{{ value(v[k]) }}{{ ',' if not loop.last }}{%- endfor -%}{{ '}' }}
{%- elif v is iterable -%}[{%- for x in v -%}{{ value(x) }}{{ ',' if not loop.last }}{%- endfor -%}]
{%- else -%}{{ v }}
{%- endif -%}
{%- endmacro -%}
{%- macro schema(s) -%}
{{ '{' }}{%- for k in s | sort if k not in ['$schema', 'additionalProperties'] -%}
{{ ',' if not loop.first }}{{ k }}:
{%- if k == 'type' and s[k] is string -%}<escape>{{ s[k] | upper }}<escape>
{%- elif k in ['properties', '$defs', 'definitions'] and s[k] is mapping -%}
{{ '{' }}{%- for p in s[k] | sort -%}{{ p }}:{{ schema(s[k][p]) if s[k][p] is mapping else value(s[k][p]) }}{{ ',' if not loop.last }}{%- endfor -%}{{ '}' }}
{%- elif k in ['items', 'not'] and s[k] is mapping -%}{{ schema(s[k]) }}
{%- else -%}{{ value(s[k]) }}
{%- endif -%}
{%- endfor -%}{{ '}' }}
{%- endmacro -%}
{%- set trigger = 'You are a model that can do function calling with the following functions' -%}
{%- set loop_messages = messages -%}
{%- set system = '' -%}
{%- if messages and messages[0]['role'] in ['system', 'developer'] -%}
{%- set system = messages[0]['content'] | trim -%}
{%- set loop_messages = messages[1:] -%}
{%- endif -%}
{%- if system or tools -%}
<start_of_turn>developer
{{ system }}
{%- if tools and trigger not in system -%}{{ '\n' if system }}{{ trigger }}{%- endif -%}
{%- for tool in tools or [] -%}
<start_function_declaration>declaration:{{ tool['function']['name'] }}{{ '{' }}
{%- if tool['function']['description'] -%}description:<escape>{{ tool['function']['description'] }}<escape>{{ ',' if tool['function']['parameters'] }}{%- endif -%}
{%- if tool['function']['parameters'] -%}parameters:{{ schema(tool['function']['parameters']) }}{%- endif -%}
{{ '}' }}<end_function_declaration>
{%- endfor -%}
<end_of_turn>
{% endif -%}
{%- set ns = namespace(open=false, calls=[]) -%}
{%- for message in loop_messages -%}
{%- if message['role'] == 'tool' -%}
<start_function_response>response:
{%- for c in ns.calls if c['id'] == message['tool_call_id'] -%}{{ c['function']['name'] }}{%- endfor -%}
{%- if message['content'] is mapping -%}{{ value(message['content']) }}
{%- else -%}{{ '{' }}value:{{ value(message['content']) }}{{ '}' }}
{%- endif -%}
<end_function_response>
{%- else -%}
{%- if ns.open and message['role'] != 'assistant' -%}<end_of_turn>
{% set ns.open = false -%}
{%- endif -%}
{%- if not ns.open -%}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else ('developer' if message['role'] in ['system', 'developer'] else message['role']) }}
{% endif -%}
{%- if message['content'] is string -%}{{ message['content'] | trim }}{%- endif -%}
{%- for c in message['tool_calls'] or [] -%}
<start_function_call>call:{{ c['function']['name'] }}{{ value(c['function']['arguments']) if c['function']['arguments'] is mapping else c['function']['arguments'] }}<end_function_call>
{%- endfor -%}
{%- if message['tool_calls'] -%}
{%- set ns.open = true -%}
{%- set ns.calls = message['tool_calls'] -%}
{%- else -%}<end_of_turn>
{% set ns.open = false -%}
{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt and not ns.open -%}<start_of_turn>model
{% endif -%}
`
