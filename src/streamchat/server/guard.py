"""Keep web pages on other sites away from a local server that has no api key.

A server on 127.0.0.1 is reachable from the user's browser, so any site could POST to it
(cross-site request) or, with DNS rebinding, read from it under its own host name. Two checks
close that: a request with an ``Origin`` must come from the server's own origin, and a
loopback-only server answers only to loopback host names. SDK clients send no ``Origin`` and
use the address they were given, so they are unaffected.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send


def is_loopback_name(host: str) -> bool:
    """True for localhost names and loopback addresses (``host`` without the port)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str:
    return urlsplit(f"//{host_header}").hostname or ""


class BrowserGuard:
    """ASGI middleware: 403 for cross-origin requests and, when ``loopback_only``, for requests
    addressed to a non-loopback host name (DNS rebinding)."""

    def __init__(self, app: ASGIApp, *, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            host = headers.get("host", "")
            reason = None
            if self.loopback_only and not is_loopback_name(_hostname(host)):
                reason = f"host {host!r} is not this loopback-only server"
            origin = headers.get("origin")
            if reason is None and origin and origin != "null" and urlsplit(origin).netloc != host:
                reason = f"cross-origin request from {origin} refused"
            if reason is not None:
                await _refuse(send, reason)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, message: str) -> None:
    body = json.dumps({"type": "error", "error": {"type": "permission_error", "message": message}})
    await send({
        "type": "http.response.start",
        "status": 403,
        "headers": [(b"content-type", b"application/json")],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body.encode()})
