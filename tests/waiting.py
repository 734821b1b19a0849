"""Waiting in tests: poll a condition until it holds, with a deadline that only guards against a
hang. A test never sleeps a fixed time hoping something has happened by then (under load it
has not), and never asserts how long something took."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

TIMEOUT = 60.0  # a hang guard, generous: the suite runs beside other work on slow machines


def wait_until(
    condition: Callable[[], T], timeout: float = TIMEOUT, what: str = "", every: float = 0.02
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that; fail the test,
    naming ``what``, if it has not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, (
            f"timed out after {timeout:g} s waiting for {what or condition}"
        )
        time.sleep(every)
    return result
