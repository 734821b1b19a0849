"""The web chat page: ``GET /`` and its files under ``/static``, all shipped in the package.

No CDN, so the page works offline: even the code highlighter (highlight.js) is vendored. A
strict Content-Security-Policy allows only this origin's script and style files (nothing
inline, no plugins, no framing): model text that ever slipped into the DOM as markup still
could not run. The page itself inserts model text as text nodes (highlighted code too).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .common import ServerConfig

WEB_PACKAGE = ("streamchat", "web")  # src/streamchat/web: index.html, its scripts, vendor/
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class WebFiles(StaticFiles):
    """The package's web folder (StaticFiles refuses paths that leave it), with our headers."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(SECURITY_HEADERS)
        return response


def routes(config: ServerConfig) -> list[BaseRoute]:
    page = resources.files(WEB_PACKAGE[0]).joinpath(WEB_PACKAGE[1], "index.html").read_bytes()

    async def index(request: Request) -> Response:
        # no-cache: revalidate, so a new version of the page and its files is seen at once
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)

    return [
        Route("/", index, methods=["GET"]),
        Mount("/static", app=WebFiles(packages=[WEB_PACKAGE]), name="static"),
    ]
