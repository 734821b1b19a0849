"""``serve --workers N``: N server processes on one port, so that one machine's cores all serve.

For models served elsewhere (a gateway to ``openai/…``, ``anthropic/…``, ``bedrock/…``; the
scripted provider), where the server's own work (HTTP, the protocols, JSON, history) is the
whole cost, one Python process uses one core. Each worker is this process forked before it
has threads, running the whole server with its listening socket bound with ``SO_REUSEPORT``:
the kernel spreads new connections over the workers, as uvicorn's and granian's workers do.
(An embedded model is one process by design: its engine batches every stream in one context
and uses every core.)

The parent supervises: SIGTERM or SIGINT reaches every worker as SIGTERM (each drains as one
server does), a worker that dies unexpectedly is started again (after a pause that grows if
it keeps dying), and a worker whose parent dies is told SIGTERM by the kernel
(``PR_SET_PDEATHSIG``), so none is left holding the port.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger("streamchat.server")

RESTART_PAUSE = 0.5  # seconds before restarting a worker that died, doubling while it keeps dying
RESTART_PAUSE_MAX = 30.0
STEADY_SECONDS = 60.0  # a worker that lived this long resets the pause


def supervise(workers: int, serve: Callable[[int], int]) -> int:
    """Fork ``workers`` processes, each running ``serve(index)`` (its exit code), and wait for
    them; returns 0 once all stopped after a signal, else the first worker's failure code."""
    children: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
    pauses = [RESTART_PAUSE] * workers
    stopping = False

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: default signal handling, and told if the parent dies
            code = 1
            try:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, signal.SIG_DFL)
                _die_with_parent()
                code = serve(index)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        children[pid] = (index, time.monotonic())

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    failure = 0
    try:
        for index in range(workers):
            start(index)
        while children:
            pid, status = os.wait()
            index, started = children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if stopping:
                continue
            if code == 0:  # stopped on its own (nothing to serve): so does the rest
                stop(signal.SIGTERM, None)
                continue
            failure = failure or code
            if time.monotonic() - started >= STEADY_SECONDS:
                pauses[index] = RESTART_PAUSE
            log.warning("worker %d exited (%d); restarting in %.1f s", index, code, pauses[index])
            time.sleep(pauses[index])
            pauses[index] = min(pauses[index] * 2, RESTART_PAUSE_MAX)
            if not stopping:
                start(index)
                failure = 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return failure


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent dies (elsewhere: nothing)."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the request was made
        os._exit(0)
