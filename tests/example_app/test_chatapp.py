"""The example app's own tests, written with the streamchat pytest plugin."""

from __future__ import annotations

import anthropic
import botocore.config
import botocore.exceptions
import openai
import pytest
from chatapp import ask

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.streamchat(faults="overload=0.5", seed=2)  # seed 2: request 0 overloads, 1 not
def test_retries_a_pre_stream_overload(streamchat_server):
    reply = ask(streamchat_server.anthropic(max_retries=0), "hello")
    assert (reply.text, reply.complete, reply.attempts) == ("[turn 1] You said: hello", True, 2)
    assert streamchat_server.fault_decisions() == ["overload", "none"]
    assert len(streamchat_server.requests()) == 1  # the overload never reached the model


def test_keeps_the_partial_text_of_a_midstream_error(streamchat_server):
    fault = {"x-streamchat-fault": "midstream_error@3"}
    reply = ask(streamchat_server.anthropic(max_retries=0, default_headers=fault), "a b c")
    assert (reply.text, reply.complete, reply.error) == ("[turn 1] You", False, "overloaded_error")
    assert reply.attempts == 1  # never retried: the three tokens are not shown twice
    assert streamchat_server.faults() == ["midstream_error@3"]


@pytest.mark.streamchat(faults="overload")
def test_overload_reaches_each_sdk_as_its_own_exception(streamchat_server):
    with pytest.raises(anthropic.OverloadedError):
        streamchat_server.anthropic(max_retries=0).messages.create(
            model="m", max_tokens=10, messages=HI
        )
    with pytest.raises(openai.RateLimitError):
        streamchat_server.openai(max_retries=0).chat.completions.create(model="m", messages=HI)
    bedrock = streamchat_server.bedrock_runtime(
        config=botocore.config.Config(retries={"total_max_attempts": 1})
    )
    with pytest.raises(bedrock.exceptions.ThrottlingException):
        bedrock.converse_stream(
            modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}]
        )
    assert streamchat_server.faults() == ["overload"] * 3
    assert streamchat_server.requests() == []


@pytest.mark.streamchat(faults="midstream_error@2")
def test_midstream_errors_reach_each_sdk_in_its_own_shape(streamchat_server):
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        with streamchat_server.anthropic_bedrock(max_retries=0).messages.stream(
            model="anthropic.claude-3-5-haiku-20241022-v1:0", max_tokens=50, messages=HI
        ) as stream:
            stream.until_done()
    with pytest.raises(openai.APIError):
        for _ in streamchat_server.openai(max_retries=0).chat.completions.create(
            model="m", messages=HI, stream=True
        ):
            pass
    response = streamchat_server.bedrock_runtime().converse_stream(
        modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}]
    )
    with pytest.raises(botocore.exceptions.EventStreamError, match="throttlingException"):
        for _ in response["stream"]:
            pass
    assert streamchat_server.faults() == ["midstream_error@2"] * 3


@pytest.mark.anyio
async def test_async_twins_stream_from_the_same_server(streamchat_server):
    claude = streamchat_server.async_anthropic()
    message = await claude.messages.create(model="m", max_tokens=20, messages=HI)
    gpt = streamchat_server.async_openai()
    chunks = [
        c async for c in await gpt.chat.completions.create(model="m", messages=HI, stream=True)
    ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert message.content[0].text == text == "[turn 1] You said: hi"
    await claude.close()
    await gpt.close()


@pytest.mark.streamchat(model="scripted?delay=0.05&text=word%20&repeat=200")
def test_a_stream_the_app_abandons_is_cancelled_on_the_server(streamchat_server):
    with streamchat_server.anthropic().messages.stream(
        model="m", max_tokens=1000, messages=HI
    ) as stream:
        next(iter(stream.text_stream))  # one token, then leave
    assert streamchat_server.wait_for(lambda: streamchat_server.cancellations() == 1)
    assert streamchat_server.tapes() == []  # an abandoned stream is not what the model sent
