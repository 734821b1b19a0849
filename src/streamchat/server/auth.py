"""Who may call: the server's ``--api-key``, as each protocol presents it.

The HTTP+JSON protocols (Anthropic, OpenAI, Responses) and the server's own endpoints take it
as ``x-api-key`` or ``Authorization: Bearer``. Bedrock clients sign with SigV4, whose secret the
server cannot know, so there the access key id plays the role of the key (a Bedrock API key,
``Authorization: Bearer``, works too). Keys are compared in constant time.

Nothing here imports the rest of the server, so any module may check a key.
"""

from __future__ import annotations

import hmac
import re
from typing import TYPE_CHECKING

from starlette.requests import Request

from ..errors import AuthenticationError

if TYPE_CHECKING:
    from .common import ServerConfig

_CREDENTIAL = re.compile(r"\bCredential=([^/,\s]+)/")


def check_api_key(request: Request, config: ServerConfig) -> None:
    """With ``--api-key`` set, require it as ``x-api-key`` or ``Authorization: Bearer``."""
    if config.api_key is None:
        return
    expected = config.api_key.encode()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    offered = [request.headers.get("x-api-key", "")]
    if scheme.lower() == "bearer":
        offered.append(token.strip())
    if not any(hmac.compare_digest(key.encode(), expected) for key in offered if key):
        raise AuthenticationError("invalid or missing API key (send x-api-key or Bearer)")


def client_key(authorization: str | None) -> str | None:
    """The key a Bedrock client presents: the SigV4 access key id, or a bearer API key.

    The signature itself is not checked (the server knows no secret key): the access key id
    plays the role of the API key.
    """
    if not authorization:
        return None
    scheme, _, rest = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    if scheme.upper().startswith("AWS4-"):
        match = _CREDENTIAL.search(rest)
        return match.group(1) if match else None
    return None


def check_credentials(request: Request, config: ServerConfig) -> None:
    """Bedrock's check: with ``--api-key`` set, the SigV4 access key id (or bearer key) must
    equal it; the messages are Bedrock's own."""
    if config.api_key is None:
        return
    offered = client_key(request.headers.get("authorization"))
    if offered is None:
        raise AuthenticationError("Missing Authentication Token")
    if not hmac.compare_digest(offered.encode(), config.api_key.encode()):
        raise AuthenticationError("The security token included in the request is invalid.")
