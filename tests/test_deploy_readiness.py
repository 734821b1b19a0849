"""What a load balancer asks a replica, in-process: ``/readyz`` (history database and default
provider reachable, not draining), the replica named on every answer and on every metric."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from streamchat.server.app import create_app
from streamchat.server.common import ServerConfig
from streamchat.testing.process import free_port

pytestmark = pytest.mark.anyio


async def client(config: ServerConfig, replica: str | None = "r1") -> httpx.AsyncClient:
    app = create_app(config, replica=replica)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def ready(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = ServerConfig(default_model="scripted", history_path=str(tmp_path / "h.db"))
    async with await client(config) as opened:
        yield opened


async def test_ready_replica_names_itself(ready: httpx.AsyncClient) -> None:
    response = await ready.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "replica": "r1"}
    assert response.headers["x-streamchat-replica"] == "r1"
    assert (await ready.get("/healthz")).headers["x-streamchat-replica"] == "r1"


async def test_draining_is_unready_but_alive(ready: httpx.AsyncClient) -> None:
    ready._transport.app.state.lifecycle.draining = True  # what serve's SIGTERM handler does
    response = await ready.get("/readyz")
    assert response.status_code == 503
    assert set(response.json()["failing"]) == {"draining"}
    assert (await ready.get("/healthz")).status_code == 200


async def test_unusable_history_or_unreachable_model_server_is_unready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    port = free_port()  # nothing listens there
    config = ServerConfig(default_model="openai/some-model", history_path=str(junk), models=[])
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    async with await client(config) as unready:
        response = await unready.get("/readyz")
    assert response.status_code == 503
    failing = response.json()["failing"]
    assert set(failing) == {"history", "provider"}
    assert "junk.db" in failing["history"]


async def test_metrics_carry_the_replica_label(ready: httpx.AsyncClient) -> None:
    body = {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    assert (await ready.post("/v1/messages", json=body)).status_code == 200
    text = (await ready.get("/metrics")).text
    samples = [line for line in text.splitlines() if line.startswith("streamchat_requests_total")]
    assert samples and all('replica="r1"' in line for line in samples)
