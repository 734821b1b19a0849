"""``serve --workers N``: N processes on one port (SO_REUSEPORT), supervised."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from protocols import PROTOCOLS
from serving import serve
from waiting import wait_until


def workers_of(pid: int) -> set[int]:
    """The live child processes of ``pid``."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children}


def answering(url: str, requests: int = 60) -> set[str]:
    """Which workers answered ``requests`` requests, each on a new connection."""
    body = PROTOCOLS["anthropic"].body("hi", 10, stream=False)
    names = set()
    for _ in range(requests):
        response = httpx.post(url + "/v1/messages", json=body, timeout=30)
        assert response.status_code == 200
        assert response.json()["content"][0]["text"] == "[turn 1] You said: hi"
        names.add(response.headers["x-streamchat-replica"])
    return names


def test_workers_share_the_port_and_a_dead_one_is_replaced() -> None:
    with serve("--model", "scripted", "--workers", "2", "--replica", "r") as server:
        parent = server.process.pid
        wait_until(lambda: len(workers_of(parent)) == 2, what="two workers")
        assert answering(server.url) == {"r.0", "r.1"}  # 60 connections, never all on one
        first = workers_of(parent)
        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: len(workers_of(parent) - first) == 1, what="the worker replaced")
        assert answering(server.url) == {"r.0", "r.1"}
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
    assert not workers_of_gone(first - {killed}), "a worker outlived its server"


def workers_of_gone(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (reaped or not)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_workers_stop_when_their_parent_is_killed() -> None:
    with serve("--model", "scripted", "--workers", "2") as server:
        parent = server.process.pid
        wait_until(lambda: len(workers_of(parent)) == 2, what="two workers")
        children = workers_of(parent)
        os.kill(parent, signal.SIGKILL)
        server.process.wait(10)
        wait_until(lambda: not workers_of_gone(children), what="the workers to stop")


def test_an_embedded_model_is_refused_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamchat.cli.main", "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "--workers" in line and "--parallel" in line
