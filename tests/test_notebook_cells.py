"""The streaming notebook's Anthropic cells, pasted as they are, run on the embedded model.

The only changes: ``client`` is a streamchat client (the notebook leaves it undefined) and every
``max_tokens`` is ``MAX_TOKENS`` so the run stays short. The model id is the notebook's own; the
client serves it with the embedded model and echoes it back.

The cells print what the model writes; its words are its own. That a reply has text at all (the
streaming cell needs one delta to time it) is certain, not hoped for: checked per prompt with
``embedded_model.may_write_nothing`` (the model's first token cannot end the reply or be a token
without text).
"""

from __future__ import annotations

import json
import re
import sys
import time

import pytest

import streamchat
from embedded_model import may_write_nothing
from streamchat.request import build_request

pytestmark = pytest.mark.model

MAX_TOKENS = 40
MODEL_ID = "anthropic.claude-3-5-sonnet-20241022-v2:0"
ESSAY = "Write mme a long essay explaining the history of the American Revolution"
SONNET = "Write me sonnet about orchids"
client: streamchat.Client | streamchat.AsyncClient | None = None  # the notebook's setup cell's


@pytest.fixture
def notebook_client(local_model, monkeypatch: pytest.MonkeyPatch):
    """Install ``client`` the way the notebook expects it: a module-level global."""

    def install(new_client: streamchat.Client | streamchat.AsyncClient):
        monkeypatch.setattr(sys.modules[__name__], "client", new_client)
        return new_client

    return install


# ---- In [9] -------------------------------------------------------------------------------------
def measure_non_streaming_ttft():
    start_time = time.time()

    response = client.messages.create(
        max_tokens=MAX_TOKENS,
        messages=[
            {
                "role": "user",
                "content": "Write mme a long essay explaining the history of the American Revolution",  # noqa: E501
            }
        ],
        temperature=0,
        model="anthropic.claude-3-5-sonnet-20241022-v2:0",
    )

    response_time = time.time() - start_time

    print(f"Time to receive first token: {response_time:.3f} seconds")
    print(f"Time to recieve complete response: {response_time:.3f} seconds")
    print(f"Total tokens generated: {response.usage.output_tokens}")

    print(response.content[0].text)


# ---- the streaming TTFT cell ------------------------------------------------------------------
def measure_streaming_ttft():
    start_time = time.time()

    stream = client.messages.create(
        max_tokens=MAX_TOKENS,
        messages=[
            {
                "role": "user",
                "content": "Write mme a long essay explaining the history of the American Revolution",  # noqa: E501
            }
        ],
        temperature=0,
        model="anthropic.claude-3-5-sonnet-20241022-v2:0",
        stream=True,
    )
    have_received_first_token = False
    for event in stream:
        if event.type == "content_block_delta":
            if not have_received_first_token:
                ttft = time.time() - start_time
                have_received_first_token = True
            print(event.delta.text, flush=True, end="")
        elif event.type == "message_delta":
            output_tokens = event.usage.output_tokens
            total_time = time.time() - start_time

    print(f"\nTime to receive first token: {ttft:.3f} seconds", flush=True)
    print(f"Time to recieve complete response: {total_time:.3f} seconds", flush=True)
    print(f"Total tokens generated: {output_tokens}", flush=True)


# ---- Streaming helpers --------------------------------------------------------------------------
async def streaming_with_helpers():
    async with client.messages.stream(
        max_tokens=MAX_TOKENS,
        messages=[
            {
                "role": "user",
                "content": "Write me sonnet about orchids",
            }
        ],
        model="anthropic.claude-3-5-sonnet-20241022-v2:0",
    ) as stream:
        async for text in stream.text_stream:
            print(text, end="", flush=True)

    final_message = await stream.get_final_message()
    print("\n\nSTREAMING IS DONE.  HERE IS THE FINAL ACCUMULATED MESSAGE: ")
    print(final_message.to_json())


# ---- Exercise -----------------------------------------------------------------------------------
# ANSI color codes
BLUE = "\033[94m"
GREEN = "\033[92m"
RESET = "\033[0m"


def chat_with_claude():
    print("Welcome to the Claude Chatbot!")
    print("Type 'quit' to exit the chat.")

    conversation = []

    while True:
        user_input = input(f"{BLUE}You: {RESET}")

        if user_input.lower() == "quit":
            print("Goodbye!")
            break

        conversation.append({"role": "user", "content": user_input})

        print(f"{GREEN}Claude: {RESET}", end="", flush=True)

        stream = client.messages.create(
            model="anthropic.claude-3-5-sonnet-20241022-v2:0",
            max_tokens=MAX_TOKENS,
            messages=conversation,
            stream=True,
        )

        assistant_response = ""
        for chunk in stream:
            if chunk.type == "content_block_delta":
                content = chunk.delta.text
                print(f"{GREEN}{content}{RESET}", end="", flush=True)
                assistant_response += content

        print()  # New line after the complete response

        conversation.append({"role": "assistant", "content": assistant_response})


# ---- the tests ----------------------------------------------------------------------------------
TIMING = r"(\d+\.\d{3}) seconds"


def says_something(local_model, *turns: str) -> bool:
    """The reply to these turns (user, assistant, user...) certainly has text."""
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]
    return not may_write_nothing(local_model, build_request(model=MODEL_ID, messages=messages))


def test_non_streaming_ttft_cell(
    notebook_client, local_model, capsys: pytest.CaptureFixture[str]
) -> None:
    assert says_something(local_model, ESSAY)
    notebook_client(streamchat.Client())
    measure_non_streaming_ttft()
    lines = capsys.readouterr().out.split("\n")
    first = re.fullmatch(f"Time to receive first token: {TIMING}", lines[0])
    complete = re.fullmatch(f"Time to recieve complete response: {TIMING}", lines[1])
    tokens = re.fullmatch(r"Total tokens generated: (\d+)", lines[2])
    assert first and complete and tokens, lines[:3]
    assert first.group(1) == complete.group(1)  # non-streaming: the first token comes with the rest
    assert 0 < int(tokens.group(1)) <= MAX_TOKENS
    assert "\n".join(lines[3:]).removesuffix("\n")  # the essay, as printed


def test_streaming_ttft_cell(
    notebook_client, local_model, capsys: pytest.CaptureFixture[str]
) -> None:
    assert says_something(local_model, ESSAY)  # the cell times the first delta: there is one
    notebook_client(streamchat.Client())
    measure_streaming_ttft()
    out = capsys.readouterr().out
    text, _, report = out.rpartition("\nTime to receive first token: ")
    lines = report.rstrip("\n").split("\n")
    ttft = re.fullmatch(TIMING, lines[0])
    total = re.fullmatch(f"Time to recieve complete response: {TIMING}", lines[1])
    tokens = re.fullmatch(r"Total tokens generated: (\d+)", lines[2])
    assert text and ttft and total and tokens, out
    assert float(ttft.group(1)) <= float(total.group(1))
    assert 0 < int(tokens.group(1)) <= MAX_TOKENS


@pytest.mark.anyio
async def test_streaming_with_helpers_cell(notebook_client, local_model, capsys) -> None:
    assert says_something(local_model, SONNET)
    notebook_client(streamchat.AsyncClient())
    await streaming_with_helpers()
    out = capsys.readouterr().out
    streamed, _, final = out.partition(
        "\n\nSTREAMING IS DONE.  HERE IS THE FINAL ACCUMULATED MESSAGE: \n"
    )
    message = json.loads(final)
    assert message["model"] == MODEL_ID
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": streamed}]
    assert streamed
    assert message["stop_reason"] in ("end_turn", "max_tokens")
    assert 0 < message["usage"]["output_tokens"] <= MAX_TOKENS
    if message["stop_reason"] == "max_tokens":
        assert message["usage"]["output_tokens"] == MAX_TOKENS
    assert message["usage"]["input_tokens"] > 0


def test_chatbot_exercise_cell(notebook_client, local_model, capsys, monkeypatch) -> None:
    chat_client = notebook_client(streamchat.Client())
    typed = iter(["hi", "sup", "quit"])
    prompts: list[str] = []

    def fake_input(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(typed)

    sent: list[list[dict]] = []
    create = chat_client.messages.create

    def spy_create(**params):
        sent.append([dict(m) for m in params["messages"]])
        return create(**params)

    monkeypatch.setattr("builtins.input", fake_input)
    monkeypatch.setattr(chat_client.messages, "create", spy_create)
    chat_with_claude()

    out = capsys.readouterr().out
    header, *turns = out.split(f"{GREEN}Claude: {RESET}")
    assert header == "Welcome to the Claude Chatbot!\nType 'quit' to exit the chat.\n"
    assert len(turns) == 2
    assert turns[-1].endswith("\nGoodbye!\n")
    printed = [t.removesuffix("Goodbye!\n").replace(GREEN, "").replace(RESET, "") for t in turns]
    assert prompts == [f"{BLUE}You: {RESET}"] * 3
    # each turn sends the whole conversation, the model's earlier reply included, as printed
    assert sent == [
        [{"role": "user", "content": "hi"}],
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": printed[0].removesuffix("\n")},
            {"role": "user", "content": "sup"},
        ],
    ]
    # a reply with text wherever the model's first token cannot be silent (sampled replies: the
    # second turn's prompt holds the first reply, so it is checked as it was sent)
    for reply, turns_sent in zip(printed, sent, strict=True):
        if says_something(local_model, *(m["content"] for m in turns_sent)):
            assert reply.removesuffix("\n")
