"""Conversations for fine-tuning: the file format and the sets a user has offline.

- `conversations`: OpenAI-style JSONL (`{"messages": [...]}` per line), checked line by line
  (`FILE:LINE: what is wrong`) and written atomically.
- `identity`: who the assistant is and what made it, with held-out paraphrases.
- `arithmetic`: multi-digit `+ - *` problems answered through a calculator tool call, or in
  the assistant's head.
- `sharegpt`: the complete records of a ShareGPT-style JSON file, even one that is cut off.

Every builder and reader gives the same thing: lists of message dicts that
`conversations.check` accepts.
"""
