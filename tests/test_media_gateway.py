"""Images and documents through a gateway, for every client protocol × upstream provider.

official client (Anthropic Messages, AnthropicBedrock's InvokeModel, Bedrock Converse, OpenAI
Chat, OpenAI Responses) → streamchat B (``anthropic/``, ``bedrock/`` or ``openai/``) → streamchat
A (scripted: it records what arrives).
The bytes A receives must be the bytes the client sent, whatever encodings lie between (base64,
Bedrock blobs, data URLs). A URL is fetched by B only for an upstream that reads none (Bedrock);
an S3 location reaches Bedrock untouched and is refused, in the client's protocol, elsewhere.
"""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import botocore.exceptions
import openai
import pytest

from media_files import make_pdf, make_png
from test_remote_providers import gateway, upstream
from test_tools_bedrock import bedrock as bedrock_client
from test_tools_bedrock import claude

PNG = make_png(16, 16, (10, 120, 200))
PDF = make_pdf(["Quarterly figures", "Appendix"])
B64, PDF64 = base64.b64encode(PNG).decode(), base64.b64encode(PDF).decode()
ASK = "Describe these."


@pytest.fixture(autouse=True)
def _credentials(sdk_credentials: None) -> None:
    """Dummy credentials for every SDK (B signs its upstream calls too)."""


def via_anthropic(url: str, bedrock: bool = False) -> str:
    """Anthropic Messages, or (``bedrock``) InvokeModelWithResponseStream with the same body
    through ``AnthropicBedrock``."""
    client = (
        claude(url) if bedrock else anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    )
    content: list[Any] = [
        {"type": "text", "text": ASK},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF64},
            "title": "figures",
        },
    ]
    with client.messages.stream(
        model="m", max_tokens=50, messages=[{"role": "user", "content": content}]
    ) as stream:
        return stream.get_final_text()


def via_converse(url: str) -> str:
    client = bedrock_client(url)
    content = [
        {"text": ASK},
        {"image": {"format": "png", "source": {"bytes": PNG}}},
        {"document": {"format": "pdf", "name": "figures", "source": {"bytes": PDF}}},
    ]
    response = client.converse_stream(modelId="m", messages=[{"role": "user", "content": content}])
    return "".join(
        event["contentBlockDelta"]["delta"].get("text", "")
        for event in response["stream"]
        if "contentBlockDelta" in event
    )


def via_chat(url: str) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    content: list[Any] = [
        {"type": "text", "text": ASK},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}},
        {
            "type": "file",
            "file": {
                "filename": "figures.pdf",
                "file_data": f"data:application/pdf;base64,{PDF64}",
            },
        },
    ]
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": content}], stream=True
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def via_responses(url: str) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    content: list[Any] = [
        {"type": "input_text", "text": ASK},
        {"type": "input_image", "image_url": f"data:image/png;base64,{B64}", "detail": "auto"},
        {"type": "input_file", "filename": "figures.pdf", "file_data": PDF64},
    ]
    with client.responses.stream(model="m", input=[{"role": "user", "content": content}]) as stream:
        return stream.get_final_response().output_text


CLIENTS: dict[str, Callable[[str], str]] = {
    "anthropic": via_anthropic,
    "anthropic-bedrock": lambda url: via_anthropic(url, bedrock=True),
    "converse": via_converse,
    "chat": via_chat,
    "responses": via_responses,
}


def received(request: Any) -> list[tuple[str, str, bytes | None]]:
    blocks = request.messages[-1].blocks
    return [(b.type, b.source.media_type, b.source.data) for b in blocks if b.type != "text"]


@pytest.mark.parametrize("provider", ["anthropic", "bedrock", "openai"])
def test_images_and_pdfs_cross_the_gateway_byte_exact(
    provider: str, monkeypatch: pytest.MonkeyPatch, fresh_providers: None
) -> None:
    server_a, scripted = upstream(f"scripted?text=Seen.&tag=media-{provider}")
    with server_a as a_url, gateway(provider, a_url, monkeypatch) as b:
        for name, client in CLIENTS.items():
            assert client(b.url) == "Seen.", name
    assert len(scripted.requests) == len(CLIENTS)
    for name, request in zip(CLIENTS, scripted.requests, strict=True):
        expected = [("image", "image/png", PNG), ("document", "application/pdf", PDF)]
        assert received(request) == expected, name
        assert "".join(b.text for b in request.messages[-1].blocks if b.type == "text") == ASK


@pytest.fixture
def image_url() -> Iterator[str]:
    """A PNG served over HTTP on 127.0.0.1."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/shot":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/shot"
    finally:
        server.shutdown()


@pytest.mark.parametrize("provider", ["anthropic", "bedrock", "openai"])
def test_urls_are_fetched_and_s3_locations_passed_only_where_the_upstream_needs_it(
    provider: str, image_url: str, monkeypatch: pytest.MonkeyPatch, fresh_providers: None
) -> None:
    server_a, scripted = upstream(f"scripted?text=Seen.&tag=url-{provider}")
    location = {"uri": "s3://bucket/cat.png", "bucketOwner": "111122223333"}
    s3_image = {"image": {"format": "png", "source": {"s3Location": location}}}
    with server_a as a_url, gateway(provider, a_url, monkeypatch) as b:
        client = anthropic.Anthropic(base_url=b.url, api_key="x", max_retries=0)

        def ask(url: str) -> Any:
            image = {"type": "image", "source": {"type": "url", "url": url}}
            return client.messages.create(
                model="m", max_tokens=20, messages=[{"role": "user", "content": [image]}]
            )

        assert ask(image_url).content[0].text == "Seen."
        (block,) = scripted.requests[-1].messages[-1].blocks
        if provider == "bedrock":  # B fetched it: Bedrock reads bytes only
            assert (block.source.media_type, block.source.data) == ("image/png", PNG)
            with pytest.raises(anthropic.BadRequestError) as info:
                ask(image_url.replace("/shot", "/gone.png"))
            assert "cannot fetch http://127.0.0.1:" in info.value.message
            assert "/gone.png: HTTP 404" in info.value.message
        else:  # Anthropic and OpenAI read an image's URL themselves
            assert block.source.url == image_url and block.source.data is None
        sent = len(scripted.requests)
        call = lambda: bedrock_client(b.url).converse(  # noqa: E731
            modelId="m", messages=[{"role": "user", "content": [{"text": ASK}, s3_image]}]
        )
        if provider == "bedrock":  # an S3 location reaches Bedrock untouched
            assert call()["output"]["message"]["content"] == [{"text": "Seen."}]
            (image,) = [b for b in scripted.requests[-1].messages[-1].blocks if b.type == "image"]
            assert image.source.s3 == location
        else:  # ... and is refused, in the client's own protocol, by any other upstream
            with pytest.raises(botocore.exceptions.ClientError) as error:
                call()
            assert error.value.response["Error"]["Code"] == "ValidationException"
            assert "reads no S3 locations" in error.value.response["Error"]["Message"]
            assert len(scripted.requests) == sent
