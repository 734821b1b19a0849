"""How the embedded model sees tools, tool calls and tool results: chat messages for its template.

SmolLM2's ChatML template has no tool syntax, so streamchat defines one, in the Hermes style that
small open models are trained on: the tools as JSON in the system message, a call as
``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` in the assistant's turn, a result as
plain text in the user's turn. A GGUF whose own template renders
``tools`` gets them (and calls/results in the transformers message shape) through its template.
A request without tools or tool blocks renders exactly as plain chat did.
"""

from __future__ import annotations

import json
from typing import Any

from ..request import MessageRequest, Tool

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
NAME_PREFIX = '\n{"name": "'  # after CALL_OPEN; the name follows under a grammar
ARGS_PREFIX = ', "arguments": '  # after the name's closing quote; the arguments follow
CALL_SUFFIX = "}\n" + CALL_CLOSE

# Hermes' own wording: of the variants measured, the one that makes SmolLM2 open a call most.
TOOLS_SYSTEM = (
    "You are a function calling AI model. You are provided with function signatures within "
    "<tools></tools> XML tags. You may call one or more functions to assist with the user query. "
    "Don't make assumptions about what values to plug into functions. Here are the available "
    "tools: <tools>\n{tools}\n</tools>\nFor each function call return a json object with "
    "function name and arguments within <tool_call></tool_call> XML tags as follows:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-dict>}}\n</tool_call>'
)
# A result as plain text: wrapped in <tool_response> tags, SmolLM2 echoes the tags back.
RESULT_TEXT = "The tool returned: {text}"
JSON_SYSTEM = "Answer with a JSON object only{schema}."


def tool_signature(tool: Tool) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "parameters": tool.input_schema}


def call_text(name: str, arguments: Any) -> str:
    """A call as the model writes it (and as earlier calls are shown to it)."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


def system_text(request: MessageRequest) -> str | None:
    """The system message: the caller's, then the tool section or the JSON output instruction."""
    parts = [request.system] if request.system else []
    if request.tools and request.tool_choice.type != "none" and not answers_results(request):
        signatures = "\n".join(
            json.dumps(tool_signature(t), ensure_ascii=False) for t in request.tools
        )
        parts.append(TOOLS_SYSTEM.format(tools=signatures))
    elif request.output_format is not None:
        schema = request.output_format.schema
        shown = f" valid against this JSON Schema: {json.dumps(schema)}" if schema else ""
        parts.append(JSON_SYSTEM.format(schema=shown))
    return "\n\n".join(parts) if parts else None


def chat_messages(request: MessageRequest) -> list[dict[str, Any]]:
    """The conversation as ``{"role", "content"}`` messages in streamchat's tool format."""
    system = system_text(request)
    messages = [{"role": "system", "content": system}] if system else []
    for turn in request.messages:
        if not turn.blocks:
            messages.append({"role": turn.role, "content": turn.content})
            continue
        parts: list[str] = []
        for block in turn.blocks:
            if block.type == "text":
                parts.append(block.text)
            elif block.type == "tool_use":
                parts.append(call_text(block.name, block.input))
            elif block.type == "tool_result":
                text = ("Error: " if block.is_error else "") + block.text
                parts.append(RESULT_TEXT.format(text=text))
            # thinking blocks are not shown to the model
        messages.append({"role": turn.role, "content": "\n".join(p for p in parts if p)})
    return messages


def template_messages(request: MessageRequest) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """Messages and tools in the transformers shape, for a template that renders ``tools``."""
    messages: list[dict[str, Any]] = (
        [{"role": "system", "content": request.system}] if request.system else []
    )
    ids: dict[str, str] = {}
    for turn in request.messages:
        text = "".join(b.text for b in turn.parts if b.type == "text")
        calls = [b for b in turn.blocks if b.type == "tool_use"]
        results = [b for b in turn.blocks if b.type == "tool_result"]
        for result in results:
            messages.append(
                {"role": "tool", "name": ids.get(result.tool_use_id, ""), "content": result.text}
            )
        if calls:
            ids.update({c.id: c.name for c in calls})
            function_calls = [
                {"type": "function", "function": {"name": c.name, "arguments": c.input}}
                for c in calls
            ]
            messages.append({"role": "assistant", "content": text, "tool_calls": function_calls})
        elif text or not results:
            messages.append({"role": turn.role, "content": text})
    tools = None
    if request.tools and request.tool_choice.type != "none":
        tools = [{"type": "function", "function": tool_signature(t)} for t in request.tools]
    return messages, tools


def answers_results(request: MessageRequest) -> bool:
    """The last turn brings tool results and the model may choose (``auto``): it answers in text.
    A 135M model offered the tools again mostly repeats the call it just made."""
    last = request.messages[-1]
    return request.tool_choice.type == "auto" and any(
        block.type == "tool_result" for block in last.blocks
    )
