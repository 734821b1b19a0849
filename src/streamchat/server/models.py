"""``GET /v1/models``: one path that both the Anthropic and the OpenAI SDK call.

The shape is chosen by the request: the Anthropic SDK always sends ``anthropic-version``, the
OpenAI SDK never does, so that header present -> Anthropic's page shape, absent -> OpenAI's list.
Each model of the Anthropic shape also says what it reads (``input_modalities``: ``text`` and
``document`` for all, ``image`` too for the remote providers), which the web page asks before
it attaches an image; the SDKs ignore the extra field.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..providers import reads_media
from ..providers.local import BUILTIN_MODELS
from ..wire import anthropic, openai
from .auth import check_api_key
from .common import ServerConfig
from .streaming import as_streamchat_error


def wants_anthropic(request: Request) -> bool:
    return "anthropic-version" in request.headers


def routes(config: ServerConfig) -> list[Route]:
    async def list_models(request: Request) -> JSONResponse:
        codec = anthropic if wants_anthropic(request) else openai
        try:
            check_api_key(request, config)
        except Exception as error:
            status, body = codec.error_response(as_streamchat_error(error))
            return JSONResponse(body, status_code=status)
        ids = config.served_models()
        if codec is anthropic:
            named = [(m, b.display_name if (b := BUILTIN_MODELS.get(m)) else m) for m in ids]
            body = anthropic.models_body(named)
            for model in body["data"]:
                reads = ["text", "image", "document"] if reads_media(model["id"]) else None
                model["input_modalities"] = reads or ["text", "document"]
            return JSONResponse(body)
        return JSONResponse(openai.models_body(ids))

    return [Route("/v1/models", list_models, methods=["GET"])]
