"""Images and documents, sans-IO: each protocol's blocks decode to the same canonical block with
the same bytes, encode back to what that protocol takes, are held to that service's limits, and a
PDF reads as its pages' text in order."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from media_files import make_pdf, make_png
from streamchat.errors import InvalidRequestError
from streamchat.media import (
    MediaBlock,
    Source,
    converse_name,
    document_text,
    from_converse,
    from_openai_part,
    to_converse,
    to_openai_part,
)
from streamchat.request import build_request
from streamchat.wire import bedrock, openai, responses

PNG = make_png()
PDF = make_pdf(["Alpha one", "Bravo two"])
B64 = base64.b64encode(PNG).decode()
PDF64 = base64.b64encode(PDF).decode()
IMAGE = MediaBlock("image", Source("image/png", PNG))


def anthropic_turn(*blocks: Any) -> Any:
    request = build_request(
        model="m",
        messages=[{"role": "user", "content": [{"type": "text", "text": "see"}, *blocks]}],
    )
    return request.messages[0].blocks[1:]


def converse_turn(*blocks: Any) -> Any:
    body = json.loads(json.dumps({"messages": [{"role": "user", "content": [*blocks]}]}))
    request = bedrock.build_converse_request(body, model="m", max_tokens_limit=100)
    return request.messages[0].blocks


def chat_turn(*parts: Any) -> Any:
    kwargs, _ = openai.parse_chat_request(
        {"model": "m", "messages": [{"role": "user", "content": [*parts]}]}
    )
    return build_request(**kwargs).messages[0].blocks


def responses_turn(*parts: Any) -> Any:
    body = {"model": "m", "input": [{"role": "user", "content": [*parts]}]}
    kwargs, _ = responses.parse_responses_request(body)
    return build_request(**kwargs).messages[0].blocks


def test_every_protocol_decodes_an_image_to_the_same_bytes() -> None:
    data_url = f"data:image/png;base64,{B64}"
    decoded = [
        anthropic_turn(
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}}
        ),
        converse_turn({"image": {"format": "png", "source": {"bytes": B64}}}),
        chat_turn({"type": "image_url", "image_url": {"url": data_url, "detail": "low"}}),
        responses_turn({"type": "input_image", "image_url": data_url}),
    ]
    assert all(blocks == (IMAGE,) for blocks in decoded), decoded


def test_every_protocol_decodes_a_pdf_with_its_name() -> None:
    decoded = [
        anthropic_turn(
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": PDF64},
                "title": "report.pdf",
            }
        ),
        converse_turn(
            {"document": {"format": "pdf", "name": "report.pdf", "source": {"bytes": PDF64}}}
        ),
        chat_turn(
            {
                "type": "file",
                "file": {
                    "filename": "report.pdf",
                    "file_data": f"data:application/pdf;base64,{PDF64}",
                },
            }
        ),
        responses_turn({"type": "input_file", "filename": "report.pdf", "file_data": PDF64}),
    ]
    for (block,) in decoded:
        assert (block.type, block.source.media_type, block.source.data) == (
            "document",
            "application/pdf",
            PDF,
        )
        assert block.title == "report.pdf"


def test_text_documents_and_urls_keep_their_shape() -> None:
    text, content, url = anthropic_turn(
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}},
        {
            "type": "document",
            "source": {"type": "content", "content": [{"type": "text", "text": "a"}]},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    )
    assert text.source == Source("text/plain", b"hi") and text.source.text == "hi"
    assert content.source.parts == ("a",)
    assert url.source.url == "https://example.com/cat.png"
    for block in (text, content, url):  # Anthropic's shape round-trips
        assert anthropic_turn(block.to_dict()) == (block,)


@pytest.mark.parametrize(
    "block",
    [
        IMAGE,
        MediaBlock("document", Source("application/pdf", PDF), title="report"),
        MediaBlock("document", Source("text/plain", b"plain words"), title="notes"),
        MediaBlock("video", Source("video/mp4", b"\x00\x00\x00\x18ftypmp42")),
        MediaBlock("image", Source("image/jpeg", s3={"uri": "s3://bucket/cat.jpg"})),
    ],
)
def test_converse_blocks_round_trip(block: MediaBlock) -> None:
    encoded = to_converse(block)
    ((kind, value),) = encoded.items()
    if "bytes" in value["source"]:  # on the JSON wire a blob is base64
        value = {**value, "source": {"bytes": base64.b64encode(value["source"]["bytes"]).decode()}}
    assert from_converse(kind, value, "x") == block


@pytest.mark.parametrize("for_responses", [False, True])
def test_openai_parts_round_trip(for_responses: bool) -> None:
    pdf = MediaBlock("document", Source("application/pdf", PDF), title="report.pdf")
    for block in (IMAGE, pdf):
        assert from_openai_part(to_openai_part(block, for_responses), "x") == block
    assert to_openai_part(MediaBlock("document", Source("text/plain", b"w"), title="t")) == {
        "type": "text",
        "text": "t\n\nw",
    }


def test_a_pdf_reads_as_its_pages_in_order() -> None:
    block = MediaBlock("document", Source("application/pdf", PDF), title="report.pdf")
    text = document_text(block, "x")
    assert text.index("[page 1]") < text.index("Alpha one") < text.index("[page 2]")
    assert text.index("[page 2]") < text.index("Bravo two")
    assert text.startswith("Document: report.pdf")


def test_bedrock_names_have_no_dots() -> None:
    assert converse_name("my report (v2).final.pdf") == "my report (v2) final pdf"
    assert converse_name("...") == "document"


def bad(call: Any) -> str:
    with pytest.raises(InvalidRequestError) as info:
        call()
    return info.value.message


def test_each_service_limits_apply_in_its_own_protocol() -> None:
    big = base64.b64encode(b"\x89PNG" + bytes(3_800_000)).decode()
    message = bad(lambda: converse_turn({"image": {"format": "png", "source": {"bytes": big}}}))
    assert message.startswith("messages.0.content.0: the image is 3,800,004 bytes")
    assert "Bedrock's limit of 3,750,000" in message
    # the same image is within Anthropic's 5 MB
    source = {"type": "base64", "media_type": "image/png", "data": big}
    assert anthropic_turn({"type": "image", "source": source})[0].type == "image"
    twenty_one = [{"image": {"format": "png", "source": {"bytes": B64}}}] * 21
    assert "21 images in one request, over Bedrock's limit of 20" in bad(
        lambda: converse_turn(*twenty_one)
    )
    pages = base64.b64encode(make_pdf(["p"] * 101)).decode()
    document = {"type": "base64", "media_type": "application/pdf", "data": pages}
    assert "the PDF has 101 pages, over Anthropic's limit of 100 pages" in bad(
        lambda: anthropic_turn({"type": "document", "source": document})
    )


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            lambda: anthropic_turn(
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "@@"},
                }
            ),
            "messages.0.content.1.source.data: not valid base64",
        ),
        (
            lambda: anthropic_turn(
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/tiff", "data": B64},
                }
            ),
            "messages.0.content.1.source.media_type: unsupported image media type 'image/tiff'",
        ),
        (
            lambda: anthropic_turn({"type": "image", "source": {"type": "file", "file_id": "f"}}),
            "messages.0.content.1.source.type: file sources need the Files API",
        ),
        (
            lambda: converse_turn({"image": {"format": "bmp", "source": {"bytes": B64}}}),
            "messages.0.content.0.image.format: must be one of png, jpeg, gif, webp",
        ),
        (
            lambda: chat_turn({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}),
            "messages.0.content.0.image_url.url: expected a data: URL or an http(s) URL",
        ),
        (
            lambda: responses_turn({"type": "input_file", "file_id": "file-1"}),
            "input.0.content.0.file_id: file ids need the Files API",
        ),
        (
            lambda: anthropic_turn(
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": B64},
                }
            ),
            "messages.0.content.1: not a readable PDF",
        ),
    ],
)
def test_bad_media_is_a_clear_error_naming_the_field(call: Any, expected: str) -> None:
    assert bad(call).startswith(expected)


def test_images_belong_in_user_turns() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [image]},
        {"role": "user", "content": "and?"},
    ]
    assert bad(lambda: build_request(model="m", messages=messages)) == (
        "messages.1.content.0: image blocks belong in user messages"
    )


def test_tool_results_carry_images_and_documents() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}}
    messages = [
        {"role": "user", "content": "shot?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "s", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [{"type": "text", "text": "ok"}, image],
                }
            ],
        },
    ]
    result = build_request(model="m", messages=messages).messages[2].blocks[0]
    assert result.text == "ok" and result.media == [IMAGE]
    assert result.to_dict()["content"] == [{"type": "text", "text": "ok"}, image]
    converse = bedrock.CONVERSE_BLOCKS["tool_result"](result)["toolResult"]["content"]
    assert converse == [{"text": "ok"}, {"image": {"format": "png", "source": {"bytes": PNG}}}]
