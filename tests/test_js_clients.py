"""JavaScript clients against ``streamchat serve``, unmodified: the AWS SDK for JavaScript v3
(its ``BedrockRuntimeClient`` speaks HTTP/2 by default, prior knowledge over ``http://``, so
these calls exercise the server's HTTP/2 side end to end), and the SSE readers people use —
``@anthropic-ai/sdk``, ``openai`` and the Vercel AI SDK — reading frames that carry ``id:``.

The package is installed from the npm registry, pinned by major version, into ``tests/.js``
(ignored by git, reused across runs); the tests skip, saying so, only where node or npm is
missing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from cache import npm_folder
from serving import Server, serve

JS_DIR = Path(__file__).parent / ".js"
PACKAGES = ["@aws-sdk/client-bedrock-runtime@3"]
SSE_DIR = Path(__file__).parent / ".js-sse"
SSE_PACKAGES = [
    *("ai@7", "@ai-sdk/anthropic@4", "@ai-sdk/openai@4"),  # the Vercel AI SDK
    *("@anthropic-ai/sdk@1", "openai@7"),
]
TEXT = "Hello from the JavaScript SDK over HTTP/2"

SCRIPT = """
import {
  BedrockRuntimeClient, ConverseCommand, ConverseStreamCommand,
  InvokeModelWithResponseStreamCommand, CountTokensCommand,
} from "@aws-sdk/client-bedrock-runtime";

const client = new BedrockRuntimeClient({          // the default handler: NodeHttp2Handler
  endpoint: process.argv[2], region: "us-west-2",
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
});
const modelId = "anthropic.claude-3-5-sonnet-20241022-v2:0";
const messages = [{ role: "user", content: [{ text: "Hi" }] }];
const out = {};

const streamed = await client.send(new ConverseStreamCommand({ modelId, messages }));
out.streamEvents = [];
out.streamText = "";
for await (const event of streamed.stream) {
  out.streamEvents.push(Object.keys(event)[0]);
  if (event.contentBlockDelta) out.streamText += event.contentBlockDelta.delta.text;
}

const whole = await client.send(new ConverseCommand({ modelId, messages }));
out.converseText = whole.output.message.content[0].text;
out.stopReason = whole.stopReason;
out.usage = whole.usage;

const body = JSON.stringify({ anthropic_version: "bedrock-2023-05-31", max_tokens: 100,
                              messages: [{ role: "user", content: "Hi" }] });
const invoked = await client.send(new InvokeModelWithResponseStreamCommand({
  modelId, body, contentType: "application/json" }));
out.invokeTypes = [];
out.invokeText = "";
for await (const item of invoked.body) {
  const event = JSON.parse(new TextDecoder().decode(item.chunk.bytes));
  out.invokeTypes.push(event.type);
  if (event.type === "content_block_delta") out.invokeText += event.delta.text;
}

const counted = await client.send(new CountTokensCommand({ modelId,
  input: { converse: { messages } } }));
out.countTokens = counted.inputTokens;
console.log(JSON.stringify(out));
client.destroy();
"""


@pytest.fixture(scope="module")
def js_folder() -> Path:
    """``tests/.js`` with the pinned package installed (npm runs only when it is missing)."""
    return npm_folder(JS_DIR, PACKAGES, "to run the AWS SDK for JavaScript")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    spec = "scripted?" + urlencode({"text": TEXT, "delay": 0.01})
    with serve("--model", spec) as running:
        yield running


def test_aws_sdk_js_default_handler_runs_converse_and_invoke_stream(
    js_folder: Path, server: Server
) -> None:
    script = js_folder / "bedrock_http2.mjs"  # beside node_modules, so imports resolve
    script.write_text(SCRIPT, encoding="utf-8")
    result = subprocess.run(
        ["node", str(script), server.url], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"node failed:\n{result.stderr}\n{server.output()[-2000:]}"
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["streamText"] == TEXT
    assert out["streamEvents"][0] == "messageStart"
    assert out["streamEvents"][-2:] == ["messageStop", "metadata"]
    assert out["converseText"] == TEXT and out["stopReason"] == "end_turn"
    assert out["usage"]["outputTokens"] == len(TEXT.split())
    assert out["invokeText"] == TEXT
    assert out["invokeTypes"][0] == "message_start" and out["invokeTypes"][-1] == "message_stop"
    assert isinstance(out["countTokens"], int) and out["countTokens"] > 0


SSE_SCRIPT = """
import { streamText } from "ai";
import { createAnthropic } from "@ai-sdk/anthropic";
import { createOpenAI } from "@ai-sdk/openai";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";

globalThis.AI_SDK_LOG_WARNINGS = false;
const url = process.argv[2];
const out = {};
const user = [{ role: "user", content: "hi" }];
const resumable = { "x-streamchat-resumable": "true" };
for (const [kind, headers] of [["plain", {}], ["resumable", resumable]]) {
  const anthropic = createAnthropic({ baseURL: url + "/v1", apiKey: "x", headers });
  const openai = createOpenAI({ baseURL: url + "/v1", apiKey: "x", headers });
  const models = { anthropic: anthropic("claude-x"), chat: openai.chat("gpt-x"),
                   responses: openai.responses("gpt-x") };
  for (const [name, model] of Object.entries(models)) {
    const onError = ({ error }) => { out[`${kind} ai ${name} error`] = String(error); };
    const settings = { prompt: "hi", maxOutputTokens: 200, maxRetries: 0, onError };
    const result = streamText({ model, ...settings });
    let text = "";
    for await (const part of result.textStream) text += part;
    out[`${kind} ai ${name}`] = [text, await result.finishReason];
  }
  const options = { apiKey: "x", defaultHeaders: headers, maxRetries: 0 };
  const claude = new Anthropic({ baseURL: url, ...options });
  const request = { model: "m", max_tokens: 200, messages: user };
  const message = await claude.messages.stream(request).finalMessage();
  out[`${kind} anthropic`] = [message.content[0].text, message.stop_reason];
  const gpt = new OpenAI({ baseURL: url + "/v1", ...options });
  let text = "", finish = null;
  const chat = await gpt.chat.completions.create({ model: "m", messages: user, stream: true });
  for await (const chunk of chat) {
    text += chunk.choices[0]?.delta?.content ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  out[`${kind} openai chat`] = [text, finish];
  const response = await gpt.responses.stream({ model: "m", input: "hi" }).finalResponse();
  out[`${kind} openai responses`] = [response.output_text, response.status];
}
console.log(JSON.stringify(out));
"""


def test_javascript_sse_readers_parse_numbered_frames(server: Server) -> None:
    """Every SSE frame carries ``id: n`` (plain and resumable streams): the JavaScript SDKs and
    the Vercel AI SDK read them to the same whole text, with no error."""
    folder = npm_folder(SSE_DIR, SSE_PACKAGES, "to run the JavaScript SSE clients")
    script = folder / "numbered_frames.mjs"
    script.write_text(SSE_SCRIPT, encoding="utf-8")
    result = subprocess.run(
        ["node", str(script), server.url], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"node failed:\n{result.stderr}\n{server.output()[-2000:]}"
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert not [key for key in out if key.endswith("error")], out
    assert len(out) == 12
    for key, (text, finish) in out.items():
        assert text == TEXT, key
        assert finish in ("stop", "end_turn", "completed"), key
