"""Bedrock Converse the other way, sans-IO: a canonical request as the ``bedrock/`` provider sends
it upstream (``converse_stream``'s messages, ``toolConfig``, ``outputConfig``, Claude's thinking).

Converse's block and tool-choice names are read from the server's codec (:mod:`.bedrock`), so
each is written once.
"""

from __future__ import annotations

import json
from typing import Any

from ..request import MessageRequest, Turn
from .bedrock import CONVERSE_BLOCKS, TOOL_CHOICES


def converse_message(turn: Turn) -> dict[str, Any]:
    """A canonical turn as a Converse message (blank text blocks left out: Bedrock refuses them)."""
    if not turn.blocks:
        return {"role": turn.role, "content": [{"text": turn.content}]}
    blocks = [
        CONVERSE_BLOCKS[b.type](b) for b in turn.blocks if not (b.type == "text" and not b.text)
    ]
    return {"role": turn.role, "content": blocks}


def converse_tool_params(request: MessageRequest) -> dict[str, Any]:
    """``toolConfig``, ``outputConfig`` and Claude's ``thinking`` for a Converse call.

    Converse has no ``none`` tool choice: the tools are still sent without one (Bedrock wants
    ``toolConfig`` whenever the history holds tool blocks), and nor can it disable parallel calls.
    """
    params: dict[str, Any] = {}
    if request.tools:
        tools = []
        for tool in request.tools:
            spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": tool.input_schema}}
            if tool.description:  # NonEmptyString
                spec["description"] = tool.description
            tools.append({"toolSpec": spec})
        config: dict[str, Any] = {"tools": tools}
        choice = request.tool_choice
        if choice.type in TOOL_CHOICES:
            config["toolChoice"] = {choice.type: {"name": choice.name} if choice.name else {}}
        params["toolConfig"] = config
    if request.thinking is not None:
        thinking: dict[str, Any] = {"type": request.thinking.type}
        if request.thinking.budget_tokens is not None:
            thinking["budget_tokens"] = request.thinking.budget_tokens
        params["additionalModelRequestFields"] = {"thinking": thinking}
    if request.output_format is not None:
        definition = {"schema": json.dumps(request.output_format.schema or {"type": "object"})}
        if request.output_format.name:
            definition["name"] = request.output_format.name
        params["outputConfig"] = {
            "textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}
        }
    return params
