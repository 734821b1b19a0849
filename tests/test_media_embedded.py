"""Images and documents on the embedded model (text-only), through ``streamchat serve`` and the
official clients: a PDF or text document is read as its text, pages in order and numbered; an
image is a 400 in each protocol's own shape naming the model, never a 500 or a silent drop."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import botocore.exceptions
import openai
import pytest

from media_files import make_pdf, make_png
from serving import Server, serve
from streamchat.request import build_request
from test_tools_bedrock import bedrock as bedrock_client

pytestmark = pytest.mark.model

PDF = make_pdf(["Quarterly figures rose", "Appendix of tables"])
PDF64 = base64.b64encode(PDF).decode()
B64 = base64.b64encode(make_png()).decode()
DOCUMENT = {
    "type": "document",
    "source": {"type": "base64", "media_type": "application/pdf", "data": PDF64},
    "title": "report.pdf",
}
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve() as running:  # no --model: the embedded default
        yield running


@pytest.fixture(autouse=True)
def _credentials(sdk_credentials: None) -> None:
    """Dummy credentials for the SDKs."""


def test_a_pdf_reaches_the_prompt_as_its_pages_text_in_order(local_model: Any) -> None:
    content = [{"type": "text", "text": "Summarise."}, DOCUMENT]
    request = build_request(model="m", messages=[{"role": "user", "content": content}])
    tokens, _ = local_model.prompt_tokens(request)
    prompt = local_model.load().detokenize(tokens).decode()
    order = ["Summarise.", "report.pdf", "[page 1]", "Quarterly figures rose", "[page 2]"]
    positions = [prompt.index(marker) for marker in [*order, "Appendix of tables"]]
    assert positions == sorted(positions), prompt


def test_a_document_is_answered_and_counted(server: Server) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    ask = {"type": "text", "text": "What rose?"}
    plain = client.messages.count_tokens(
        model="m", messages=[{"role": "user", "content": [ask]}]
    ).input_tokens
    with client.messages.stream(
        model="m", max_tokens=8, messages=[{"role": "user", "content": [ask, DOCUMENT]}]
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason in ("end_turn", "max_tokens")
    usage = message.usage  # input_tokens leaves out what the prompt cache supplied
    prompt = usage.input_tokens + (usage.cache_read_input_tokens or 0)
    assert prompt > plain + 10  # the pages' text is in the prompt
    text = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
    counted = client.messages.count_tokens(
        model="m", messages=[{"role": "user", "content": [ask, text]}]
    ).input_tokens
    assert counted > plain


def refusal(call: Any, error: type[Exception]) -> Any:
    with pytest.raises(error) as info:
        call()
    return info.value


def test_an_image_is_refused_in_each_protocol_naming_the_model(server: Server) -> None:
    messages = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0).messages
    turn = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]}]
    for stream in (False, True):
        error = refusal(
            lambda stream=stream: messages.create(
                model="m", max_tokens=8, messages=turn, stream=stream
            ),
            anthropic.BadRequestError,
        )
        assert error.status_code == 400 and error.body["error"]["type"] == "invalid_request_error"
        assert "messages.0.content.1: model smollm2 reads no images" in error.message

    converse = bedrock_client(server.url)
    content = [{"text": "What is this?"}, {"image": {"format": "png", "source": {"bytes": b"x"}}}]
    failure = refusal(
        lambda: converse.converse_stream(
            modelId="m", messages=[{"role": "user", "content": content}]
        ),
        botocore.exceptions.ClientError,
    ).response
    assert failure["Error"]["Code"] == "ValidationException"
    assert failure["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "reads no images" in failure["Error"]["Message"]

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    data_url = f"data:image/png;base64,{B64}"
    chat = refusal(
        lambda: client.chat.completions.create(
            model="m",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}}]}
            ],
        ),
        openai.BadRequestError,
    )
    assert chat.status_code == 400 and "reads no images" in chat.message
    responses = refusal(
        lambda: client.responses.create(
            model="m",
            input=[{"role": "user", "content": [{"type": "input_image", "image_url": data_url}]}],
        ),
        openai.BadRequestError,
    )
    assert responses.status_code == 400 and "reads no images" in responses.message


def test_the_model_answers_the_next_request_after_refusing_an_image(server: Server) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    turn = [{"role": "user", "content": [IMAGE]}]
    refusal(
        lambda: client.messages.create(model="m", max_tokens=4, messages=turn),
        anthropic.BadRequestError,
    )
    message = client.messages.create(
        model="m", max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.stop_reason in ("end_turn", "max_tokens")
