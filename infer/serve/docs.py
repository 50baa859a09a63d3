"""`infer serve --docs DIR`: each chat request's last user message gets the passages retrieved
for it (infer.retrieval), as a documents block inside that message's content; the reply lists
them in `sources` (path, line, score), beside OpenAI's fields."""

from __future__ import annotations

from infer.serve import schema


def with_documents(body: schema.ChatRequest, retriever, k: int):
    """(the request with documents in its last user message, the hits); unchanged when it
    has no user message."""
    from infer.retrieval import prompt as docs_prompt

    users = [i for i, m in enumerate(body.messages) if m.role == "user"]
    if not users:
        return body, []
    last = body.messages[users[-1]]
    question = last.as_dict()["content"] or ""
    hits = retriever.search(question, k) if question.strip() else []
    messages = list(body.messages)
    messages[users[-1]] = schema.Message(role="user",
                                         content=docs_prompt.user_text(question, hits))
    return body.model_copy(update={"messages": messages}), hits
