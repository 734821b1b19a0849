"""The bare-server baseline for ``load.py``: a minimal Starlette app that streams what the scripted
provider streams (the same Anthropic SSE events, one token per ``delay``), with no provider,
validation, wire codec, metrics or taps, on the same ASGI server and event loop as
``streamchat serve``. streamchat's figures are then ratios to this one, measured in the same run.

Run as ``python benchmarks/_bare_app.py serve --host H --port P [--http-server NAME]
[--delay S]`` (the arguments ``streamchat.testing.process.serve`` passes).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from streamchat.cli.serve import serving_process
from streamchat.server.listen import SERVERS, Listener, run

_TOKENS = re.compile(r"\s*\S+")
_ids = itertools.count(1)


def frame(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def create_app(delay: float) -> Starlette:
    async def messages(request: Request) -> StreamingResponse:
        body = json.loads(await request.body())
        prompt = body["messages"][-1]["content"]
        tokens = _TOKENS.findall("[turn 1] You said: " + prompt)[: body["max_tokens"]]
        message_id = f"msg_bare{next(_ids):08d}"

        async def events() -> AsyncIterator[bytes]:
            usage = {"input_tokens": len(prompt.split()), "output_tokens": 0}
            message = {"id": message_id, "type": "message", "role": "assistant", "model": "bare",
                       "content": [], "stop_reason": None, "stop_sequence": None}  # fmt: skip
            start = {"type": "message_start", "message": {**message, "usage": usage}}
            yield frame("message_start", start)
            yield frame("content_block_start", {"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}})  # fmt: skip
            for i, token in enumerate(tokens):
                if i:
                    await asyncio.sleep(delay)
                yield frame("content_block_delta", {"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": token}})  # fmt: skip
            yield frame("content_block_stop", {"type": "content_block_stop", "index": 0})
            yield frame("message_delta", {"type": "message_delta", "delta": {
                "stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(tokens)}})  # fmt: skip
            yield frame("message_stop", {"type": "message_stop"})

        return StreamingResponse(events(), media_type="text/event-stream")

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    routes = [Route("/v1/messages", messages, methods=["POST"]), Route("/healthz", healthz)]
    return Starlette(routes=routes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--backlog", type=int, default=2048)
    parser.add_argument("--http-server", choices=SERVERS, default="dual")
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()
    listener = Listener(args.host, args.port, args.backlog, args.log_level)
    with serving_process():  # the same process settings as streamchat serve
        run(create_app(args.delay), listener, args.http_server)


if __name__ == "__main__":
    main()
