"""The server's history: protocol requests logged as they stream, and the JSON API over httpx."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from serving import Server, serve
from streamchat.history import HistoryStore
from streamchat.server.app import create_app
from streamchat.server.common import ServerConfig

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app in-process with history on, serving the scripted provider."""
    config = ServerConfig(default_model="scripted", history_path=str(tmp_path / "h.db"))
    transport = httpx.ASGITransport(app=create_app(config))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def ask(api: httpx.AsyncClient, messages: list[dict], stream: bool = True) -> str:
    """One Anthropic Messages request; the reply text."""
    body = {"model": "claude-test", "max_tokens": 100, "messages": messages, "stream": stream}
    response = await api.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    if not stream:
        return response.json()["content"][0]["text"]
    return "".join(
        anthropic_text(line) for line in response.text.splitlines() if "text_delta" in line
    )


def anthropic_text(line: str) -> str:
    return json.loads(line.removeprefix("data: "))["delta"]["text"]


async def test_protocol_requests_are_logged_and_listed(api: httpx.AsyncClient) -> None:
    reply = await ask(api, [{"role": "user", "content": "hello server"}])
    listed = (await api.get("/api/conversations")).json()["data"]
    assert [(c["model"], c["provider"], c["turns"], c["preview"]) for c in listed] == [
        ("claude-test", "scripted", 1, "hello server")
    ]
    conversation = (await api.get(f"/api/conversations/{listed[0]['id']}")).json()
    user, assistant = conversation["messages"]
    assert (user["role"], user["text"]) == ("user", "hello server")
    assert (assistant["text"], assistant["interrupted"]) == (reply, False)
    assert assistant["stop_reason"] == "end_turn"
    assert assistant["output_tokens"] > 0 and assistant["ttft"] is not None


async def test_a_follow_up_request_joins_its_conversation(api: httpx.AsyncClient) -> None:
    first = [{"role": "user", "content": "one"}]
    reply = await ask(api, first, stream=False)
    await ask(api, [{"role": "user", "content": "unrelated"}])
    follow_up = [
        *first,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "two"},
    ]
    await ask(api, follow_up)
    listed = (await api.get("/api/conversations")).json()["data"]
    assert [c["preview"] for c in listed] == ["one", "unrelated"]  # latest activity first
    messages = (await api.get(f"/api/conversations/{listed[0]['id']}")).json()["messages"]
    assert [m["text"] for m in messages][:3] == ["one", reply, "two"]
    assert len(messages) == 4


async def test_openai_requests_are_logged_too(api: httpx.AsyncClient) -> None:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "via openai"}]}
    response = await api.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    (conversation,) = (await api.get("/api/conversations")).json()["data"]
    assert (conversation["model"], conversation["preview"]) == ("gpt-test", "via openai")


async def test_delete_then_unknown_ids_are_404_json(api: httpx.AsyncClient) -> None:
    await ask(api, [{"role": "user", "content": "to be deleted"}])
    (conversation,) = (await api.get("/api/conversations")).json()["data"]
    deleted = await api.delete(f"/api/conversations/{conversation['id']}")
    assert deleted.json() == {
        "id": conversation["id"],
        "type": "conversation_deleted",
        "deleted": True,
    }
    assert (await api.get("/api/conversations")).json() == {"data": []}
    for response in (
        await api.delete(f"/api/conversations/{conversation['id']}"),
        await api.get(f"/api/conversations/{conversation['id']}"),
        await api.get("/api/conversations/not-a-number"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"


async def test_bad_limit_is_a_400_naming_the_field(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/conversations", params={"limit": "0"})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("limit:")


async def test_history_off_answers_404_and_logs_nothing(tmp_path: Path) -> None:
    app = create_app(ServerConfig(default_model="scripted"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        await ask(c, [{"role": "user", "content": "not logged"}])
        response = await c.get("/api/conversations")
    assert response.status_code == 404
    assert "history is off" in response.json()["error"]["message"]


async def test_the_history_api_requires_the_api_key(tmp_path: Path) -> None:
    config = ServerConfig(default_model="scripted", history_path=str(tmp_path / "h.db"))
    config.api_key = "sekrit"
    app = create_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/api/conversations")).status_code == 401
        ok = await c.get("/api/conversations", headers={"x-api-key": "sekrit"})
    assert ok.status_code == 200


async def test_requests_refused_before_streaming_leave_no_trace(tmp_path: Path) -> None:
    config = ServerConfig(
        default_model="scripted?error_before=overloaded_error",
        history_path=str(tmp_path / "h.db"),
    )
    app = create_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        body = {"model": "claude-test", "max_tokens": 10, "stream": True}
        body["messages"] = [{"role": "user", "content": "refused"}]
        assert (await c.post("/v1/messages", json=body)).status_code == 529
        assert (await c.get("/api/conversations")).json() == {"data": []}


async def test_an_error_mid_stream_keeps_the_partial_reply_and_the_error(tmp_path: Path) -> None:
    config = ServerConfig(
        default_model="scripted?error_after=3&error=overloaded_error",
        history_path=str(tmp_path / "h.db"),
    )
    app = create_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        body = {"model": "claude-test", "max_tokens": 50, "stream": True}
        body["messages"] = [{"role": "user", "content": "fail midway"}]
        assert "event: error" in (await c.post("/v1/messages", json=body)).text
        (conversation,) = (await c.get("/api/conversations")).json()["data"]
        messages = (await c.get(f"/api/conversations/{conversation['id']}")).json()["messages"]
    reply = messages[-1]
    assert (reply["text"], reply["interrupted"]) == ("[turn 1] You", True)
    assert reply["error"].startswith("overloaded_error")


async def test_unusable_database_keeps_the_server_answering(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database" * 100)
    config = ServerConfig(default_model="scripted", history_path=str(path))
    app = create_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert await ask(c, [{"role": "user", "content": "still works"}])
        response = await c.get("/api/conversations")
    assert response.status_code == 500
    assert "not a database" in response.json()["error"]["message"]


# -- a real server process -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    db = tmp_path_factory.mktemp("history") / "served.db"
    with serve("--model", "scripted?delay=0.05", "--history", "--db", str(db)) as running:
        yield running, db


def wait_for(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_serve_history_logs_an_sdk_stream(server: tuple[Server, Path]) -> None:
    running, db = server
    client = anthropic.Anthropic(base_url=running.url, api_key="x", max_retries=0)
    with client.messages.stream(
        model="claude-3-5-sonnet-latest",
        max_tokens=50,
        messages=[{"role": "user", "content": "from the sdk"}],
    ) as stream:
        text = stream.get_final_text()
    listed = httpx.get(f"{running.url}/api/conversations").json()["data"]
    match = [c for c in listed if c["preview"] == "from the sdk"]
    assert match, listed
    conversation = httpx.get(f"{running.url}/api/conversations/{match[0]['id']}").json()
    assert conversation["messages"][-1]["text"] == text
    with HistoryStore(db, readonly=True) as store:  # the same rows, straight from the file
        assert store.conversation(match[0]["id"])["messages"][-1]["interrupted"] is False


def test_serve_history_keeps_a_disconnected_reply_marked_interrupted(
    server: tuple[Server, Path],
) -> None:
    running, _ = server
    client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="x", max_retries=0)
    prompt = "cut me off " * 10
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}], stream=True
    )
    received = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received += chunk.choices[0].delta.content
        if len(received.split()) >= 12:  # more than one flush interval in
            break
    stream.close()

    def finished() -> dict | None:
        listed = httpx.get(f"{running.url}/api/conversations").json()["data"]
        for c in listed:
            if c["preview"].startswith("cut me off"):
                messages = httpx.get(f"{running.url}/api/conversations/{c['id']}").json()
                reply = messages["messages"][-1]
                if reply["role"] == "assistant" and reply["error"] is None and reply["ttft"]:
                    return reply
        return None

    reply = wait_for(finished)
    assert reply is not None
    assert reply["interrupted"] is True
    assert reply["text"].startswith(received)
    assert len(reply["text"]) < len(f"[turn 1] You said: {prompt}")
