#!/usr/bin/env python3
"""Regenerates chat_template_cases.json: chat templates (the shapes real models ship, plus one that
exercises the whole Jinja subset) rendered by the real Jinja2 the way Hugging Face's
apply_chat_template does (sandboxed, trim_blocks, lstrip_blocks, raise_exception, its tojson).
test_server_units.cpp checks that moenav's renderer produces the same text for every case.
Usage: python3 tests/server/chat_template_cases.py   (needs Jinja2)"""
import json, os

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
def raise_exception(m): raise Exception(m)
def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
env.filters['tojson'] = tojson
env.globals['raise_exception'] = raise_exception

T = {}
T['chatml'] = "{%- for message in messages -%}\n{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}\n{%- endfor -%}\n{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}\n"
T['mixtral'] = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
T['llama2'] = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
T['llama3'] = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
T['zephyr'] = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
T['gemma'] = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
T['features'] = """{#- exercises the subset: namespaces, reverse slices, tests, filters, methods -#}
{%- set ns = namespace(last_user=-1, count=0) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.last_user == -1 and message.role == "user" %}
        {%- set ns.last_user = index %}
    {%- endif %}
    {%- set ns.count = ns.count + 1 %}
{%- endfor %}
last user {{ ns.last_user }} of {{ ns.count }}
{% for message in messages if message.role != 'system' %}
  {{ loop.index }}/{{ loop.length }} {{ message['role'] | upper }}: {{ message.content.split(' ')[0] }}{% if not loop.last %},{% endif %}
{% endfor %}
{%- set config = {"b": [1, 2.5, "x"], "a": none, "t": true} %}
{{ config | tojson }} {{ config | tojson(indent=2) }}
{% for key, value in config.items() %}{{ key }}={{ value }};{% endfor %}
{{ [3, 1, 2] | join("-") }} {{ "  pad  " | trim }}|{{ "Hello World".lower() }} {{ "abc"[::-1] }} {{ "abcdef"[1:4] }}
{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 1 + 2 * 3 }} {{ "a" ~ 1 ~ none }}
{{ "x" if messages | length > 2 else "y" }} {{ undefined_thing | default("fallback") }} {{ messages[0].missing is defined }}
{{ "ell" in "hello" }} {{ 3 not in [1, 2] }} {{ messages | selectattr("role", "equalto", "user") | list | length }}
{{ messages | map(attribute="role") | join(",") }} {{ range(3) | list }} {{ "a,b,,c".split(",") }} {{ 'it\\'s' }}
{%- set block %}captured {{ 1 + 1 }}{% endset %}
{{ block }} {{ messages[-1]['content'].startswith('How') }} {{ 0.1 + 0.2 }} {{ 3.0 }}
    {% if true %}
  lstripped
    {% endif %}
{{ "end" }}
"""
convs = {
 'sys': [{"role":"system","content":"You are helpful."},{"role":"user","content":"Hello there"},{"role":"assistant","content":" Hi! "},{"role":"user","content":"How are you?"}],
 'nosys': [{"role":"user","content":"Hello there"},{"role":"assistant","content":" Hi! "},{"role":"user","content":"How are you?"}],
 'bad': [{"role":"user","content":"a"},{"role":"user","content":"b"}],
}
out = []
for tname, src in T.items():
    t = env.from_string(src)
    for cname, msgs in convs.items():
        for agp in (True, False):
            try:
                r = t.render(messages=msgs, add_generation_prompt=agp, bos_token="<s>", eos_token="</s>")
                out.append((tname, cname, agp, True, r))
            except Exception as e:
                out.append((tname, cname, agp, False, str(e)))
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'chat_template_cases.json')
with open(path, 'w') as f:
    json.dump({'templates': T, 'conversations': convs,
               'cases': [{'template': t, 'conversation': c, 'add_generation_prompt': a, 'ok': ok, 'output': o}
                         for t, c, a, ok, o in out]}, f, indent=1, ensure_ascii=False)
    f.write('\n')
