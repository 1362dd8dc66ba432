// SPDX-License-Identifier: Apache-2.0
// Built-in fallback chat templates (see builtin_templates.h). Kept byte-identical to
// tests/golden/chat_template/templates/*.jinja; builtin_templates_test checks that.
#include "model/chat_template/builtin_templates.h"

namespace lychee::jinja {
namespace {

// Llama 3 Instruct's own template.
constexpr const char kLlama3[] =
    R"tmpl({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %})tmpl";

// ChatML, as used by Qwen and many fine-tunes.
constexpr const char kChatMl[] = R"tmpl({%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)tmpl";

// Mistral Instruct ([INST] ... [/INST]); an initial system message is prepended to the first user
// turn, and roles must alternate as the original template demands.
constexpr const char kMistral[] = R"tmpl({%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- '[INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- message['content'] + eos_token }}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
)tmpl";

}  // namespace

const char* BuiltInTemplateSource(std::string_view name) {
  if (name == "llama3") return kLlama3;
  if (name == "chatml") return kChatMl;
  if (name == "mistral") return kMistral;
  return nullptr;
}

}  // namespace lychee::jinja
