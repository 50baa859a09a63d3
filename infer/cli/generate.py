"""`python -m infer generate`: one completion, streamed to stdout or printed as JSON."""

from __future__ import annotations

import json
import sys

from infer.cli import args as cli_args
from infer.cli import docs_arg, tools_arg


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser("generate", help="complete a prompt",
                              description="Complete a prompt (or, with --chat, answer it).")
    cli_args.add_model_args(p)
    p.add_argument("--prompt", required=True, help="the prompt text")
    p.add_argument("--chat", action="store_true",
                   help="treat the prompt as a user message in the model's chat template")
    p.add_argument("--system", default=None, help="system message (with --chat)")
    tools_arg.add_tools_arg(p)
    docs_arg.add_docs_args(p)
    cli_args.add_sampling_args(p, max_new_tokens=64,
                               default_note="greedy; with --chat, the model's recommended "
                                            "setting")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: text, token_ids, finish_reason, "
                        "prompt_tokens, prefill_tokens_per_sec, decode_tokens_per_sec, "
                        "sampling (the settings used and their source); with --tools also "
                        "tool_calls (name, arguments, result) and sampled (per token: false "
                        "where a tool's output was forced in); with --docs also sources (path, "
                        "line, score of each passage given)")
    p.set_defaults(func=run)


def run(args) -> int:
    from infer.runtime import engine

    if args.system is not None and not args.chat:
        cli_args.fail("--system needs --chat: a plain completion has no system message")
    tools = tools_arg.tools_from(args)
    if tools and not args.chat:
        cli_args.fail("--tools needs --chat: a tool's output goes back to the model as a chat "
                      "message")
    cli_args.check_sampling_flags(args)
    retriever = docs_arg.retriever_from(args)
    model = cli_args.load_model(args.model)
    sampling, source = cli_args.sampling_kwargs(args, model, chat=args.chat)
    prompt, hits = args.prompt, []
    if retriever is not None:
        from infer.retrieval import prompt as docs_prompt

        hits = retriever.search(args.prompt, args.docs_k)
        prompt = docs_prompt.user_text(args.prompt, hits)

    def show(event):
        sys.stdout.write(event.text)
        sys.stdout.flush()

    try:
        gen = engine.generate_text(model, prompt, chat=args.chat, system=args.system,
                                   stream=None if args.json else show, tools=tools, **sampling)
    except ValueError as e:
        cli_args.fail(str(e))
    out = gen[0]
    if args.json:
        extra = {"tool_calls": out.tool_calls, "sampled": out.sampled} if tools else {}
        if retriever is not None:
            extra["sources"] = [h.source() for h in hits]
        print(json.dumps({
            "text": out.text, "token_ids": out.token_ids, "finish_reason": out.finish_reason,
            **extra,
            "prompt_tokens": gen.prefill_tokens,
            "prefill_tokens_per_sec": round(gen.prefill_tokens_per_sec, 2),
            "decode_tokens_per_sec": round(gen.decode_tokens_per_sec, 2),
            "sampling": {**{k: sampling[k] for k in ("temperature", "top_k", "top_p", "seed")},
                         "source": source},
        }, ensure_ascii=False))
    else:
        print()
        calls = f"{len(out.tool_calls)} tool calls, " if tools else ""
        if retriever is not None:
            print("sources: " + (", ".join(f"{h.chunk.source} ({h.score:.3g})" for h in hits)
                                 or "no passage matched"), file=sys.stderr)
        print(f"[{gen.prefill_tokens} prompt tokens at {gen.prefill_tokens_per_sec:.1f} tok/s, "
              f"{len(out.token_ids)} new at {gen.decode_tokens_per_sec:.1f} tok/s, {calls}"
              f"{out.finish_reason}; {cli_args.describe_sampling(sampling, source)}]",
              file=sys.stderr)
    return 0
