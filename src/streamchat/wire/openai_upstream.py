"""Chat Completions the other way, sans-IO: a canonical request as the parameters the ``openai/``
provider sends upstream (messages, tools, tool choice, response format, reasoning effort).

The names it shares with the server's codec (:mod:`.openai`: tool choices, a call's
``tool_calls`` shape) are read from there, so each is written once.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequestError
from ..media import MediaBlock, to_openai_part
from ..request import MessageRequest
from .openai import TOOL_CHOICES, tool_calls_body

# canonical tool choice -> OpenAI's ``tool_choice`` string
OPENAI_TOOL_CHOICES: dict[str, str] = {v: k for k, v in TOOL_CHOICES.items()}
# a thinking budget (tokens, 0 = the model's choice) -> the reasoning_effort asked upstream
EFFORT_BUDGETS: tuple[tuple[int, str], ...] = ((0, "medium"), (2048, "low"), (8192, "medium"))


def chat_messages(request: MessageRequest) -> list[dict[str, Any]]:
    """The conversation as OpenAI messages: tool results become ``tool`` messages (before any
    text of their turn), tool calls ``tool_calls`` with JSON-string arguments. Thinking is left
    out: OpenAI-compatible servers take no reasoning back (DeepSeek refuses it)."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for turn in request.messages:
        if not turn.blocks:
            messages.append({"role": turn.role, "content": turn.content})
            continue
        calls = [block for block in turn.blocks if block.type == "tool_use"]
        for block in turn.blocks:
            if block.type == "tool_result":
                if block.media:
                    raise InvalidRequestError(
                        "the OpenAI API takes no images or documents in tool results "
                        "(send them in the user message)"
                    )
                messages.append(
                    {"role": "tool", "tool_call_id": block.tool_use_id, "content": block.text}
                )
        if turn.role == "assistant":
            content = turn.content or (None if calls else "")
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = tool_calls_body(calls)
            messages.append(message)
        elif any(isinstance(b, MediaBlock) for b in turn.blocks):
            parts = [
                to_openai_part(b) if isinstance(b, MediaBlock) else {"type": "text", "text": b.text}
                for b in turn.blocks
                if b.type == "text" or isinstance(b, MediaBlock)
            ]
            messages.append({"role": "user", "content": parts})
        elif turn.content or not any(b.type == "tool_result" for b in turn.blocks):
            messages.append({"role": "user", "content": turn.content})
    return messages


def tool_params(request: MessageRequest) -> dict[str, Any]:
    """``tools``, ``tool_choice``, ``parallel_tool_calls``, ``response_format`` and
    ``reasoning_effort`` for what the request asks (only the ones it sets)."""
    params: dict[str, Any] = {}
    if request.tools:
        params["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.input_schema,
                }
                | ({"strict": True} if tool.strict else {}),
            }
            for tool in request.tools
        ]
        choice = request.tool_choice
        params["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if choice.type == "tool"
            else OPENAI_TOOL_CHOICES[choice.type]
        )
        if choice.disable_parallel_tool_use:
            params["parallel_tool_calls"] = False
    output = request.output_format
    if output is not None:
        params["response_format"] = (
            {"type": "json_object"}
            if output.schema is None
            else {
                "type": "json_schema",
                "json_schema": {"name": output.name or "output", "schema": output.schema}
                | ({"strict": True} if output.strict else {}),
            }
        )
    if request.thinking is not None:
        budget = request.thinking.budget_tokens or 0
        params["reasoning_effort"] = next(
            (effort for limit, effort in EFFORT_BUDGETS if budget <= limit), "high"
        )
    return params
