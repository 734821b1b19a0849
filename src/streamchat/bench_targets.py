"""Bench targets for running endpoints, each spoken to by its protocol's official SDK.

Any server is fair game, streamchat's or a hosted one, because the client is the one users run:
``anthropic.AsyncAnthropic``, ``openai.AsyncOpenAI``, ``boto3`` ``bedrock-runtime`` (blocking, so
in a thread pool as wide as the highest concurrency level). Each text delta is timed when the SDK
yields it, which is what an application sees. SDK retries are off: a retried request would hide
its failure inside a longer TTFT.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from ._extras import require
from .bench import BenchRequest, Measurement, Mode, Target
from .errors import InvalidRequestError

PROTOCOLS = ("anthropic", "bedrock", "openai")
TIMEOUT_S = 600.0  # a long non-streaming reply from a slow model must not time out
# SDKs refuse to start without a key, though a local server may not ask for one.
PLACEHOLDER_KEY = "streamchat-bench"


def _elapsed(started: float) -> float:
    return time.perf_counter() - started


class AnthropicTarget:
    """``POST /v1/messages`` through the ``anthropic`` SDK (``create(stream=True|False)``)."""

    def __init__(self, base_url: str, model: str, api_key: str | None) -> None:
        import anthropic

        root = base_url.rstrip("/")
        root = root.removesuffix("/v1")  # the SDK adds /v1 itself
        key = api_key or os.environ.get("ANTHROPIC_API_KEY") or PLACEHOLDER_KEY
        self.client = anthropic.AsyncAnthropic(
            base_url=root, api_key=key, max_retries=0, timeout=TIMEOUT_S
        )
        self.base_url, self.model, self.sdk = root, model, f"anthropic {anthropic.__version__}"

    def describe(self) -> dict[str, Any]:
        return _endpoint("anthropic", self.base_url, self.model, self.sdk)

    async def measure(self, mode: Mode, request: BenchRequest) -> Measurement:
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if request.temperature is not None:  # SDK 2.x dropped the keyword; the API still takes it
            params["extra_body"] = {"temperature": request.temperature}
        started = time.perf_counter()
        if mode == "non-stream":
            message = await self.client.messages.create(**params)
            usage = message.usage
            total = _elapsed(started)
            return Measurement(
                total, usage.input_tokens, usage.output_tokens, [], message.stop_reason
            )
        offsets: list[float] = []
        input_tokens = output_tokens = 0
        stop_reason = None
        stream = await self.client.messages.create(**params, stream=True)
        async with stream:
            async for event in stream:
                if event.type == "content_block_delta":
                    if getattr(event.delta, "text", None):
                        offsets.append(_elapsed(started))
                elif event.type == "message_start":
                    input_tokens = event.message.usage.input_tokens
                elif event.type == "message_delta":
                    output_tokens = event.usage.output_tokens
                    stop_reason = event.delta.stop_reason
        total = _elapsed(started)
        return Measurement(total, input_tokens, output_tokens or len(offsets), offsets, stop_reason)

    async def aclose(self) -> None:
        await self.client.close()


class OpenAITarget:
    """``POST /v1/chat/completions`` through the ``openai`` SDK, usage via ``include_usage``."""

    def __init__(self, base_url: str, model: str, api_key: str | None) -> None:
        import openai

        root = base_url.rstrip("/")
        if not urlsplit(root).path:  # a server root: the API lives under /v1
            root += "/v1"
        key = api_key or os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_KEY
        self.client = openai.AsyncOpenAI(
            base_url=root, api_key=key, max_retries=0, timeout=TIMEOUT_S
        )
        self.base_url, self.model, self.sdk = root, model, f"openai {openai.__version__}"

    def describe(self) -> dict[str, Any]:
        return _endpoint("openai", self.base_url, self.model, self.sdk)

    async def measure(self, mode: Mode, request: BenchRequest) -> Measurement:
        params: dict[str, Any] = {
            "model": self.model,
            "max_completion_tokens": request.max_tokens,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        started = time.perf_counter()
        if mode == "non-stream":
            completion = await self.client.chat.completions.create(**params)
            total = _elapsed(started)
            usage = completion.usage
            choice = completion.choices[0]
            tokens_in = usage.prompt_tokens if usage else 0
            tokens_out = usage.completion_tokens if usage else 0
            return Measurement(total, tokens_in, tokens_out, [], choice.finish_reason)
        offsets: list[float] = []
        input_tokens = output_tokens = 0
        stop_reason = None
        stream = await self.client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True}
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices:
                    choice = chunk.choices[0]
                    if choice.delta is not None and choice.delta.content:
                        offsets.append(_elapsed(started))
                    stop_reason = choice.finish_reason or stop_reason
                if chunk.usage is not None:
                    input_tokens = chunk.usage.prompt_tokens
                    output_tokens = chunk.usage.completion_tokens
        total = _elapsed(started)
        return Measurement(total, input_tokens, output_tokens or len(offsets), offsets, stop_reason)

    async def aclose(self) -> None:
        await self.client.close()


class BedrockTarget:
    """``converse`` / ``converse-stream`` through ``boto3``, in a thread per request.

    Credentials come from boto3's usual chain; ``api_key`` (streamchat's ``--api-key``) is used
    as the access key id instead, which is how a streamchat server checks Bedrock clients.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None, workers: int) -> None:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session()
        credentials: dict[str, str] = {}
        if api_key:
            credentials = {"aws_access_key_id": api_key, "aws_secret_access_key": PLACEHOLDER_KEY}
        config = Config(
            retries={"total_max_attempts": 1},
            max_pool_connections=max(10, workers),
            read_timeout=TIMEOUT_S,
            connect_timeout=10,
        )
        self.client = session.client(
            "bedrock-runtime",
            endpoint_url=base_url,
            region_name=session.region_name or "us-west-2",
            config=config,
            **credentials,
        )
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-boto3")
        self.base_url, self.model = base_url, model
        self.sdk = f"boto3 {boto3.__version__}"

    def describe(self) -> dict[str, Any]:
        return _endpoint("bedrock", self.base_url, self.model, self.sdk)

    def _params(self, request: BenchRequest) -> dict[str, Any]:
        inference: dict[str, Any] = {"maxTokens": request.max_tokens}
        if request.temperature is not None:
            inference["temperature"] = request.temperature
        return {
            "modelId": self.model,
            "messages": [{"role": "user", "content": [{"text": request.prompt}]}],
            "inferenceConfig": inference,
        }

    def _converse(self, request: BenchRequest) -> Measurement:
        params = self._params(request)
        started = time.perf_counter()
        response = self.client.converse(**params)
        total = _elapsed(started)
        usage = response.get("usage", {})
        return Measurement(
            total,
            usage.get("inputTokens", 0),
            usage.get("outputTokens", 0),
            [],
            response.get("stopReason"),
        )

    def _converse_stream(self, request: BenchRequest) -> Measurement:
        params = self._params(request)
        offsets: list[float] = []
        usage: dict[str, int] = {}
        stop_reason = None
        started = time.perf_counter()
        response = self.client.converse_stream(**params)
        for event in response["stream"]:
            if "contentBlockDelta" in event:
                if event["contentBlockDelta"]["delta"].get("text"):
                    offsets.append(_elapsed(started))
            elif "messageStop" in event:
                stop_reason = event["messageStop"].get("stopReason")
            elif "metadata" in event:
                usage = event["metadata"].get("usage", {})
        total = _elapsed(started)
        return Measurement(
            total,
            usage.get("inputTokens", 0),
            usage.get("outputTokens", 0) or len(offsets),
            offsets,
            stop_reason,
        )

    async def measure(self, mode: Mode, request: BenchRequest) -> Measurement:
        call: Callable[[BenchRequest], Measurement] = (
            self._converse_stream if mode == "stream" else self._converse
        )
        return await asyncio.get_running_loop().run_in_executor(self.executor, call, request)

    async def aclose(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _endpoint(protocol: str, url: str, model: str, sdk: str) -> dict[str, Any]:
    return {
        "kind": "endpoint",
        "model": model,
        "protocol": protocol,
        "endpoint": url,
        "where": f"{url} ({protocol} protocol, {sdk})",
        "client": sdk,
        "timing": "perf_counter when the SDK yields each event",
    }


def endpoint_target(
    protocol: str, base_url: str, model: str, api_key: str | None = None, workers: int = 16
) -> Target:
    """The target for ``protocol`` at ``base_url``; ``workers`` bounds boto3's threads."""
    if protocol in PROTOCOLS:  # each protocol's SDK is the extra of the same name
        require(protocol, f"benchmarking the {protocol} protocol")
    if protocol == "anthropic":
        return AnthropicTarget(base_url, model, api_key)
    if protocol == "openai":
        return OpenAITarget(base_url, model, api_key)
    if protocol == "bedrock":
        return BedrockTarget(base_url, model, api_key, workers)
    raise InvalidRequestError(f"--protocol: expected one of {', '.join(PROTOCOLS)}")
