"""The chat's slash commands (table, parsing, tab completion) and the conversation helpers they
need: fitting a conversation into the model's context window, exporting it as Markdown.

The table is data: ``/help`` lists it and the completer completes from it, so a command added
here is documented and completed at once. What each command does lives in :mod:`.chat`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import StreamchatError
from ..providers import known_models, provider_prefixes, resolve
from ..request import build_request


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    usage: str  # the argument, as /help shows it
    help: str
    choices: tuple[str, ...] = ()  # completions of the argument (else none, or paths for /file)


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("help", "", "list these commands"),
        Command("model", "[NAME]", "switch model (the conversation carries over); show it"),
        Command("system", "[TEXT]", "set the system prompt ('/system off' clears it); show it"),
        Command("new", "", "start a new conversation"),
        Command("retry", "", "regenerate the last reply"),
        Command("undo", "", "drop the last exchange"),
        Command("save", "FILE", "save the conversation as Markdown"),
        Command("stats", "on|off", "show timing and tokens after each reply", ("on", "off")),
        Command("history", "", "list recent conversations"),
        Command("resume", "ID", "continue a conversation from the history"),
        Command("file", "PATH", "attach a text file to the next message"),
        Command("tokens", "", "show how much of the context window the conversation uses"),
        Command("quit", "", "leave (also: exit, Ctrl-D)"),
    )
}


def parse_command(line: str) -> tuple[str, str] | None:
    """``(name, argument)`` for a line that is a command; ``None`` for a prompt. A line starting
    with ``//`` is a prompt starting with ``/``."""
    stripped = line.strip()
    if not stripped.startswith("/") or stripped.startswith("//"):
        return None
    name, _, argument = stripped[1:].partition(" ")
    return name.lower(), argument.strip()


def help_lines() -> list[str]:
    width = max(len(f"/{c.name} {c.usage}") for c in COMMANDS.values())
    lines = [f"  {f'/{c.name} {c.usage}'.ljust(width)}  {c.help}" for c in COMMANDS.values()]
    return [
        "Commands (Tab completes):",
        *lines,
        "Alt-Enter or Esc then Enter: a new line in the message; pasted text keeps its lines.",
    ]


def completer() -> Any:
    """A prompt_toolkit completer: command names after '/', then each command's argument
    (model names, on/off, file paths)."""
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document

    paths = PathCompleter(expanduser=True)
    models = tuple(known_models()) + tuple(provider_prefixes())

    class ChatCompleter(Completer):
        def get_completions(self, document: Document, complete_event: Any) -> Iterable[Any]:
            text = document.text_before_cursor
            if not text.startswith("/") or "\n" in text:
                return
            name, space, argument = text[1:].partition(" ")
            if not space:
                for command in COMMANDS:
                    if command.startswith(name.lower()):
                        yield Completion(f"/{command}", start_position=-len(text))
                return
            command = COMMANDS.get(name.lower())
            if command is None:
                return
            if command.name == "file":
                yield from paths.get_completions(Document(argument), complete_event)
                return
            choices = models if command.name == "model" else command.choices
            for choice in choices:
                if choice.startswith(argument):
                    yield Completion(choice, start_position=-len(argument))

    return ChatCompleter()


# -- the context window ---------------------------------------------------------------------------


@dataclass(slots=True)
class ContextUse:
    tokens: int | None  # prompt tokens of what is sent (None: the model cannot count them)
    window: int | None  # the model's context window (None: unknown)
    dropped: int  # oldest turns left out to fit


def context_window(model: str | None) -> int | None:
    provider, _ = resolve(model)
    window = getattr(provider, "n_ctx", None)
    return window if isinstance(window, int) and window > 0 else None


def count_tokens(model: str | None, turns: list[dict[str, str]], params: dict[str, Any]) -> int:
    """The prompt tokens of ``turns`` as the model counts them (``LookupError``: it cannot)."""
    provider, model_id = resolve(model)
    counter: Callable[[Any], int] | None = getattr(provider, "count_tokens", None)
    if counter is None:
        raise LookupError(model_id)
    request = build_request(
        model=model_id,
        messages=turns,
        system=params.get("system"),
        max_tokens=params.get("max_tokens") or 1,
    )
    return counter(request)


def fit_context(
    turns: list[dict[str, str]], params: dict[str, Any]
) -> tuple[list[dict[str, str]], ContextUse]:
    """The turns to send: the oldest exchanges left out until the prompt leaves room for the
    reply (``max_tokens``, at most half the window). The newest turn is never cut: if it alone
    does not fit, it is sent whole and the model says so."""
    model = params.get("model")
    try:
        window = context_window(model)
        if window is None:  # a hosted model: its window is its own business
            return turns, ContextUse(None, None, 0)
        tokens = count_tokens(model, turns, params)
    except (LookupError, StreamchatError):
        return turns, ContextUse(None, None, 0)
    budget = window - min(params.get("max_tokens") or 0, window // 2)
    dropped = 0
    while tokens > budget and len(turns) - dropped > 1:
        dropped += 2 if len(turns) - dropped > 2 else 1  # an exchange: a question and its answer
        tokens = count_tokens(model, turns[dropped:], params)
    return turns[dropped:], ContextUse(tokens, window, dropped)


def measure(turns: list[dict[str, str]], params: dict[str, Any]) -> ContextUse:
    """What the next request would use with a one-word message (``/tokens``)."""
    turns = [*turns, {"role": "user", "content": "?"}] if turns else []
    sent, use = fit_context(turns, params)
    if use.tokens is None:
        with contextlib.suppress(LookupError, StreamchatError):
            use.tokens = count_tokens(params.get("model"), sent, params) if sent else 0
    return use


def context_line(use: ContextUse, turns: int) -> str:
    """What ``/tokens`` says."""
    if use.tokens is None:
        return f"{turns} turns; this model does not count tokens"
    line = f"context: {use.tokens} tokens"
    if use.window is not None:
        line += f" of {use.window} ({100 * use.tokens / use.window:.0f}%)"
    line += f" · {turns} turns"
    if use.dropped:
        line += f" · the oldest {use.dropped} left out to fit"
    return line


def dropped_notice(dropped: int, window: int | None) -> str:
    turns = "turn" if dropped == 1 else "turns"
    return (
        f"[the oldest {dropped} {turns} left out: the conversation no longer fits the model's "
        f"context window of {window} tokens]"
    )


# -- export ---------------------------------------------------------------------------------------


def conversation_markdown(turns: list[dict[str, str]], model: str, system: str | None) -> str:
    """The conversation as Markdown (``/save``): a heading per turn, the text as written."""
    lines = [f"# Conversation with {model}", ""]
    if system:
        lines += [f"System prompt: {system}", ""]
    for turn in turns:
        who = "You" if turn["role"] == "user" else "Assistant"
        lines += [f"## {who}", "", turn["content"].rstrip(), ""]
    return "\n".join(lines)
