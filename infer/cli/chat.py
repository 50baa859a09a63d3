"""`python -m infer chat`: an interactive conversation, streamed token by token.

Commands: /reset (forget the conversation), /system TEXT (set the system message and start
over), /temperature T, /help, /quit. End of input (Ctrl-D) also quits.
"""

from __future__ import annotations

import sys

from infer.cli import args as cli_args
from infer.cli import docs_arg, tools_arg

HELP = ("commands: /reset  /system TEXT  /temperature T  /help  /quit  "
        "(anything else is your message)")


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser("chat", help="chat with a model in the terminal",
                              description="Chat with a model. " + HELP)
    cli_args.add_model_args(p)
    p.add_argument("--system", default=None, help="initial system message")
    tools_arg.add_tools_arg(p)
    docs_arg.add_docs_args(p)
    cli_args.add_sampling_args(p, max_new_tokens=256,
                               default_note="the model's recommended setting, shown in the "
                                            "banner")
    p.set_defaults(func=run)


class Session:
    """The conversation state and the settings the commands change."""

    def __init__(self, model, sampling: dict, system: str | None, tools: list[str] = (),
                 retriever=None, docs_k: int = 5):
        self.model = model
        self.retriever = retriever  # infer.retrieval.Retriever: each message gets documents
        self.docs_k = docs_k
        self.tools = list(tools)
        self.sampling = dict(sampling)
        self.system = system
        self.history: list[dict] = []
        self.turn = 0

    def messages(self, user: str) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history + [{"role": "user", "content": user}]

    def with_documents(self, user: str) -> str:
        """The user's message with the passages retrieved for it (only this turn carries them:
        the history keeps the plain message, so old documents do not fill the context)."""
        if self.retriever is None:
            return user
        from infer.retrieval import prompt as docs_prompt

        hits = self.retriever.search(user, self.docs_k)
        say("(sources: " + (", ".join(h.chunk.source for h in hits) or "none matched") + ")")
        return docs_prompt.user_text(user, hits)

    def command(self, line: str) -> bool:
        """Handles a /command; False means quit."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/quit", "/exit"):
            return False
        if name == "/reset":
            self.history = []
            say("(conversation cleared)")
        elif name == "/system":
            self.system = arg or None
            self.history = []
            say(f"(system message {'set' if arg else 'removed'}; conversation cleared)")
        elif name == "/temperature":
            try:
                value = float(arg)
                if value < 0:
                    raise ValueError
            except ValueError:
                say(f"(/temperature needs a number >= 0, got {arg!r})")
                return True
            self.sampling["temperature"] = value
            say(f"(temperature {value})")
        elif name == "/help":
            say(HELP)
        else:
            say(f"(unknown command {name}; {HELP})")
        return True

    def reply(self, user: str) -> str:
        from infer.runtime import engine

        cfg = self.model.config
        content = self.with_documents(user)
        messages = self.messages(content)
        ids = engine.prompt_ids(self.model, messages, chat=True)
        # Forget the oldest turns rather than fail when the conversation outgrows the context.
        while len(ids) >= cfg.max_seq_len - 1 and len(messages) > 1 + bool(self.system):
            self.history = self.history[2:]
            messages = self.messages(content)
            ids = engine.prompt_ids(self.model, messages, chat=True)
            say("(dropped the oldest turn to fit the context)")
        if len(ids) >= cfg.max_seq_len - 1:
            say(f"(message too long: {len(ids)} tokens, context is {cfg.max_seq_len})")
            return ""
        sampling = dict(self.sampling, seed=self.sampling["seed"] + self.turn)
        sampling["max_new_tokens"] = min(sampling["max_new_tokens"], cfg.max_seq_len - len(ids))
        self.turn += 1

        def show(event):
            sys.stdout.write(event.text)
            sys.stdout.flush()

        runner = None
        if self.tools:
            from infer.tools.session import ToolRunner

            runner = ToolRunner(self.model, [messages], self.tools)
        weights = sampling.pop("weights", "float32")
        gen = engine.generate(engine.decode_params(self.model, weights), cfg, [ids],
                              stream=show, stop_ids=engine.stop_ids_for(self.model, chat=True),
                              decode_fn=self.model.tokenizer.decode, tools=runner, **sampling)
        text = gen[0].text
        sys.stdout.write("\n")
        if runner is None:
            turn = [{"role": "user", "content": user}, {"role": "assistant", "content": text}]
        else:  # the tool calls and their results stay in the conversation
            whole = runner.conversation(0, gen[0].token_ids)
            turn = [{"role": "user", "content": user}] + whole[len(messages):]
        self.history += turn
        return text


def say(text: str) -> None:
    print(text, flush=True)


def run(args) -> int:
    cli_args.check_sampling_flags(args)
    retriever = docs_arg.retriever_from(args)
    model = cli_args.load_model(args.model)
    sampling, source = cli_args.sampling_kwargs(args, model, chat=True)
    tools = tools_arg.tools_from(args)
    session = Session(model, sampling, args.system, tools, retriever, args.docs_k)
    say(f"chatting with {args.model}: {cli_args.describe_sampling(sampling, source)}"
        + (f"; tools: {', '.join(tools)}" if tools else ""))
    say(HELP)
    while True:
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            say("")
            return 0
        if not line:
            continue
        if line.startswith("/"):
            if not session.command(line):
                return 0
            continue
        try:
            session.reply(line)
        except KeyboardInterrupt:  # stop this answer, keep the session
            say("\n(interrupted)")
