"""A small app under test: it streams a reply with the anthropic SDK and must survive the two
failures every streaming app meets — a 529 before the stream (retry it) and an error half way
(keep the text that arrived; a retry would show it twice)."""

from __future__ import annotations

from dataclasses import dataclass

import anthropic

MODEL = "claude-3-5-haiku-latest"


@dataclass
class Reply:
    text: str
    complete: bool
    attempts: int
    error: str | None = None  # the in-stream error's type when the reply was cut short


def ask(client: anthropic.Anthropic, prompt: str, attempts: int = 3) -> Reply:
    """The reply to ``prompt``, streamed; pre-stream overloads are retried up to ``attempts``."""
    for attempt in range(1, attempts + 1):
        parts: list[str] = []
        try:
            with client.messages.stream(
                model=MODEL, max_tokens=300, messages=[{"role": "user", "content": prompt}]
            ) as stream:
                for text in stream.text_stream:
                    parts.append(text)
            return Reply("".join(parts), True, attempt)
        except anthropic.OverloadedError:  # 529 before any byte of the reply: safe to retry
            if attempt == attempts:
                raise
        except anthropic.APIStatusError as error:  # an error event in the stream
            body = error.body if isinstance(error.body, dict) else {}
            kind = body.get("error", {}).get("type", "api_error")
            return Reply("".join(parts), False, attempt, kind)
    raise AssertionError("unreachable")
