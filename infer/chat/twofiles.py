"""The twofiles chat layout, defined once as a Jinja chat template.

    <|bos|>
    <|system_start|> text <|system_end|>                 (optional, first message only)
    <|user_start|> text <|user_end|>
    <|assistant_start|> text
        [<|tool_call_start|> {"name": NAME, "arguments": {...}} <|tool_call_end|>]...
    <|assistant_end|>
    <|tool_output_start|> text <|tool_output_end|>       (a "tool" message: what a tool returned)
    ...
    [<|assistant_start|>]                                (add_generation_prompt)

`infer.chat.render` renders twofiles tokenizers with TEMPLATE, and every export writes TEMPLATE
into the GGUF or Hugging Face files, so other tools render exactly what the project trains on.
Messages are in the OpenAI shape (infer.chat.messages); an assistant message whose content is
missing or None renders its tool calls alone.
"""

from __future__ import annotations

MARKER = "<|assistant_start|>"  # a tokenizer with this special token uses TEMPLATE

TEMPLATE = (
    "{{ '<|bos|>' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<|system_start|>' + message['content'] + '<|system_end|>' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|user_start|>' + message['content'] + '<|user_end|>' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant_start|>' }}"
    "{% if message['content'] is defined and message['content'] %}"
    "{{ message['content'] }}"
    "{% endif %}"
    "{% if message['tool_calls'] is defined %}"
    "{% for call in message['tool_calls'] %}"
    "{{ '<|tool_call_start|>{\"name\": \"' + call['function']['name'] + '\", \"arguments\": '"
    " + call['function']['arguments'] + '}<|tool_call_end|>' }}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|assistant_end|>' }}"
    "{% elif message['role'] == 'tool' %}"
    "{{ '<|tool_output_start|>' + message['content'] + '<|tool_output_end|>' }}"
    "{% else %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant_start|>' }}{% endif %}"
)
