"""``streamchat chat --web``: the chat page in a browser instead of the terminal.

It is ``streamchat serve`` on 127.0.0.1 (the same code path, options and banner) with the history
on unless ``--no-history``, plus the page's URL; a browser opens by itself only where there is
a display to show it. Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
import webbrowser

from .._extras import require
from ..errors import InvalidRequestError
from .options import bounded

HOST = "127.0.0.1"
PORT = bounded(int, 1, 65_535)  # as serve's; serve itself is imported only for --web (an extra)


def add_web_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("web")
    group.add_argument(
        "--web", action="store_true", help="chat in the browser: serve the page on 127.0.0.1"
    )
    group.add_argument("--port", type=PORT, help="port for --web (default: a free one)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def serve_args(args: argparse.Namespace, port: int) -> argparse.Namespace:
    """The ``serve`` command line that ``chat --web`` stands for, parsed by serve's own parser."""
    argv = ["serve", "--host", HOST, "--port", str(port), "--log-level", "warning"]
    if args.model:
        argv += ["--model", args.model]
    argv += ["--no-history"] if args.no_history else ["--history"]
    if args.db and not args.no_history:
        argv += ["--db", args.db]
    from . import serve

    parser = argparse.ArgumentParser(prog="streamchat chat --web")
    serve.register(parser.add_subparsers())
    return parser.parse_args(argv)


def has_display() -> bool:
    """Whether a browser we start could be seen (not over SSH, in a container, in CI)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_when_ready(url: str, timeout: float = 30) -> None:
    """Open the page once the server answers (it may still be loading a model)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}healthz", timeout=1).status_code == 200:
                webbrowser.open(url)
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def run_web(args: argparse.Namespace) -> int:
    if args.continue_ or args.resume is not None:
        raise InvalidRequestError("--web: open earlier conversations from the page's list")
    require("server", "streamchat chat --web")
    from . import serve

    port = args.port or free_port()
    url = f"http://{HOST}:{port}/"
    parsed = serve_args(args, port)
    print(f"streamchat web chat at {url} (Ctrl-C stops it)", flush=True)
    if has_display():
        threading.Thread(target=open_when_ready, args=(url,), daemon=True).start()
    return serve.run(parsed)
