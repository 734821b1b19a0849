"""Images and documents in the history: stored once each by SHA-256 (SQLite and PostgreSQL),
referenced from the messages' blocks, listed by ``conversation``/``history show``, served by
``/api/attachments/<sha256>``, inline again in an export, and gone with the last conversation
that refers to them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import deployment as postgres_cluster
from media_files import make_pdf, make_png
from streamchat.history import HistoryStore, open_store
from streamchat.history.base import Store
from test_history_server import api

PNG, PDF = make_png(), make_pdf(["Minutes of the meeting"])
PNG_SHA, PDF_SHA = hashlib.sha256(PNG).hexdigest(), hashlib.sha256(PDF).hexdigest()
IMAGE = {
    "type": "image",
    "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
}
DOCUMENT = {
    "type": "document",
    "title": "minutes.pdf",
    "source": {
        "type": "base64",
        "media_type": "application/pdf",
        "data": base64.b64encode(PDF).decode(),
    },
}
WHY_NOT = postgres_cluster.unavailable()
__all__ = ["api"]  # the fixture: the app in-process, history on, the scripted model


@pytest.fixture(scope="module")
def cluster() -> Iterator[postgres_cluster.Cluster | None]:
    if WHY_NOT is not None:
        yield None
        return
    with postgres_cluster.cluster() as found:
        yield found


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        with HistoryStore(tmp_path / "h.db") as opened:
            yield opened
        return
    if WHY_NOT is not None:
        pytest.skip(str(WHY_NOT))
    cluster = request.getfixturevalue("cluster")
    name = f"t_{uuid.uuid4().hex[:12]}"
    cluster.sql(f"CREATE DATABASE {name}")
    with open_store(cluster.url.rsplit("/", 1)[0] + f"/{name}") as opened:
        yield opened


def stored_hashes(store: Store, *conversations: int) -> set[str]:
    return {a["sha256"] for c in conversations for a in store.conversation(c)["attachments"]}


def test_each_attachment_is_stored_once_and_referenced(store: Store) -> None:
    first = store.new_conversation(model="m")
    second = store.new_conversation(model="m")
    text = {"type": "text", "text": "Read these."}
    store.add_message(first, "user", "Read these.", blocks=[text, IMAGE, DOCUMENT])
    store.add_message(second, "user", "Again.", blocks=[{"type": "text", "text": "Again."}, IMAGE])
    store.add_message(second, "user", "Once more.", blocks=[IMAGE])  # the same bytes, a third time

    loaded = store.conversation(first)
    blocks = loaded["messages"][0]["blocks"]
    assert blocks[1]["source"] == {
        "type": "attachment",
        "sha256": PNG_SHA,
        "media_type": "image/png",
        "size": len(PNG),
    }
    assert "data" not in json.dumps(blocks)  # no bytes in the message row
    assert [
        (a["sha256"], a["media_type"], a["size"], a["title"]) for a in loaded["attachments"]
    ] == sorted(
        [
            (PNG_SHA, "image/png", len(PNG), None),
            (PDF_SHA, "application/pdf", len(PDF), "minutes.pdf"),
        ]
    )
    assert store.attachment(PNG_SHA) == ("image/png", PNG)
    assert store.attachment(PDF_SHA) == ("application/pdf", PDF)
    assert len(store.conversation(second)["attachments"]) == 2  # two messages link one image

    exported = store.export(first)  # stands alone: the bytes inline again
    assert exported["messages"][0]["blocks"] == [text, IMAGE, DOCUMENT]
    copy = store.import_conversation(exported)
    assert stored_hashes(store, copy) == {PNG_SHA, PDF_SHA}

    store.delete(first)
    store.delete(copy)  # the PDF is no one's now; the image is still the second's
    assert store.attachment(PDF_SHA) is None
    assert store.attachment(PNG_SHA) == ("image/png", PNG)
    store.delete(second)
    assert store.attachment(PNG_SHA) is None


@pytest.mark.anyio
async def test_a_served_request_keeps_its_images_once(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    content: list[Any] = [{"type": "text", "text": "What is this?"}, IMAGE, DOCUMENT]
    for _ in range(2):  # two conversations, the same files
        body = {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": content}]}
        assert (await api.post("/v1/messages", json=body)).status_code == 200
    listed = (await api.get("/api/conversations")).json()["data"]
    assert len(listed) == 2 and all(c["turns"] == 1 for c in listed)
    conversation = (await api.get(f"/api/conversations/{listed[0]['id']}")).json()
    assert {a["sha256"] for a in conversation["attachments"]} == {PNG_SHA, PDF_SHA}
    served = await api.get(f"/api/attachments/{PNG_SHA}")
    assert (served.status_code, served.headers["content-type"], served.content) == (
        200,
        "image/png",
        PNG,
    )
    missing = await api.get(f"/api/attachments/{'0' * 64}")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    with HistoryStore(tmp_path / "h.db") as store:  # the rows: one per file, not per message
        rows = store._execute("SELECT count(*), sum(size) FROM attachments", ())
    assert tuple(rows[0]) == (2, len(PNG) + len(PDF))

    shown = subprocess.run(
        [sys.executable, "-m", "streamchat.cli.main", "history", "show", str(listed[0]["id"]),
         "--history", str(tmp_path / "h.db")],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f"📎 **Image** · image/png · {len(PNG):,} bytes · sha256 {PNG_SHA[:12]}…" in shown.stdout
    assert "📎 **Document** · “minutes.pdf” · application/pdf" in shown.stdout
