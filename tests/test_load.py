"""A small version of ``benchmarks/load.py``: 100 concurrent streams per protocol through one
``streamchat serve`` process, every stream's text and event sequence checked exactly.

Correctness only: nothing here asserts a time (the benchmark reports those).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import Server, serve

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import load

STREAMS, TOKENS, DELAY = 100, 12, 0.02


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve("--model", f"scripted?delay={DELAY}", "--backlog", "512") as running:
        yield running


@pytest.mark.parametrize("wave", load.WAVES)
def test_concurrent_streams_lose_duplicate_reorder_and_cross_nothing(
    server: Server, wave: str
) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    result = asyncio.run(
        load.run_wave(wave, port, server.process.pid, streams=STREAMS, tokens=TOKENS, delay=DELAY)
    )
    assert result.problems == []
    assert result.verdicts == {"ok": STREAMS}
    assert result.duplicate_ids == 0
    assert len(result.gaps) == STREAMS * (TOKENS - 1)


def test_the_checker_catches_a_crossed_stream() -> None:
    """The verdicts above mean something: text from another stream is caught."""
    protocol = load.PROTOCOLS["anthropic"]
    raw = load.Raw(protocol, 1, load.prompt_for(1, 6))
    other = load.prompt_for(2, 6)
    body = b"".join(
        [
            b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1"}}\n\n',
            *(
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                b'"delta":{"type":"text_delta","text":"%s"}}\n\n' % word.encode()
                for word in ["[turn", " 1]", " You", " said:", " " + other.split()[0], " s1.1"]
            ),
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
        ]
    )
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    raw.reads = [(0.0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)]
    assert load.check(raw, 6).verdict == "crossed"
