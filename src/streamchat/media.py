"""Images, documents and videos in a conversation, sans-IO: the canonical block, each protocol's
shapes both ways, each service's limits, and a document read as text for a text-only model.

A :class:`MediaBlock` holds its content as bytes (decoded once, whatever the protocol's encoding:
Anthropic base64, Bedrock blobs, OpenAI data URLs), as a URL, or as a Bedrock S3 location (passed
to Bedrock untouched). Each protocol's decoder here turns its block into a ``MediaBlock``; each
encoder turns one back, so a gateway hands its upstream the very bytes its client sent.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

from .errors import InvalidRequestError

MediaKind = Literal["image", "document", "video"]
MEDIA_KINDS: tuple[str, ...] = ("image", "document", "video")
MB = 1024 * 1024

# media type -> Bedrock's ``format`` (the only image types every service reads)
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/plain": "txt",
    "text/csv": "csv",
    "text/html": "html",
    "text/markdown": "md",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}
VIDEO_FORMATS = {
    "video/x-matroska": "mkv",
    "video/quicktime": "mov",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/x-flv": "flv",
    "video/mpeg": "mpeg",
    "video/x-ms-wmv": "wmv",
    "video/3gpp": "three_gp",
}
FORMATS: dict[str, dict[str, str]] = {
    "image": IMAGE_FORMATS,
    "document": DOCUMENT_FORMATS,
    "video": VIDEO_FORMATS,
}
MAGIC = {  # a file's first bytes -> its media type (WebP: see sniffed_media_type)
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
    b"%PDF-": "application/pdf",
}
DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[^,;]*)*?(?P<b64>;base64)?,", re.I)


@dataclass(slots=True, frozen=True)
class Source:
    """Where a block's content is: ``data`` (bytes), ``url``, ``s3`` (Bedrock's ``s3Location``)
    or ``parts`` (Anthropic's ``content`` document source: text chunks)."""

    media_type: str = ""
    data: bytes | None = None
    url: str | None = None
    s3: Mapping[str, Any] | None = None
    parts: tuple[str, ...] | None = None

    @property
    def text(self) -> str | None:
        """The content as text, for text documents (``text/*`` bytes or chunks)."""
        if self.parts is not None:
            return "\n\n".join(self.parts)
        if self.data is not None and self.media_type.startswith("text/"):
            return self.data.decode("utf-8", "replace")
        return None

    def data_url(self) -> str:
        assert self.data is not None
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode()}"


@dataclass(slots=True, frozen=True)
class MediaBlock:
    """An image, a document or a video of a user turn (or of a tool result's content).
    ``title`` is a document's title (Bedrock's ``name``, OpenAI's ``filename``)."""

    type: MediaKind
    source: Source
    title: str | None = None
    context: str | None = None
    citations: bool | None = None
    cache_control: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The Anthropic Messages shape (a video, or an S3 source, has none: refused)."""
        if self.type == "video" or self.source.s3 is not None:
            what = "videos" if self.type == "video" else "S3 locations"
            raise InvalidRequestError(f"the Anthropic Messages API reads no {what}")
        source = self.source
        body: dict[str, Any] = {"type": self.type}
        if source.url is not None:
            body["source"] = {"type": "url", "url": source.url}
        elif source.parts is not None:
            content = [{"type": "text", "text": part} for part in source.parts]
            body["source"] = {"type": "content", "content": content}
        elif self.type == "document" and source.media_type.startswith("text/"):
            body["source"] = {"type": "text", "media_type": "text/plain", "data": source.text}
        else:
            data = base64.b64encode(source.data or b"").decode()
            body["source"] = {"type": "base64", "media_type": source.media_type, "data": data}
        if self.title is not None:
            body["title"] = self.title
        if self.context is not None:
            body["context"] = self.context
        if self.citations is not None:
            body["citations"] = {"enabled": self.citations}
        if self.cache_control is not None:
            body["cache_control"] = dict(self.cache_control)
        return body


# -- limits ------------------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class MediaLimits:
    """What one service accepts; over a limit is an invalid request in that protocol's shape."""

    service: str
    image_bytes: int
    document_bytes: int
    images: int  # per request
    documents: int | None = None  # per request
    pdf_pages: int | None = None

    def check(self, block: MediaBlock, where: str) -> None:
        data = block.source.data
        if data is None:
            return
        limit = self.image_bytes if block.type == "image" else self.document_bytes
        if len(data) > limit:
            raise InvalidRequestError(
                f"the {block.type} is {len(data):,} bytes, over {self.service}'s limit of "
                f"{limit:,} bytes",
                path=where,
            )
        if self.pdf_pages is not None and block.source.media_type == "application/pdf":
            pages = len(_pdf(data, where).pages)
            if pages > self.pdf_pages:
                raise InvalidRequestError(
                    f"the PDF has {pages} pages, over {self.service}'s limit of "
                    f"{self.pdf_pages} pages",
                    path=where,
                )

    def check_counts(self, blocks: Iterable[MediaBlock]) -> None:
        kinds = [block.type for block in blocks]
        for kind, limit in (("image", self.images), ("document", self.documents)):
            if limit is not None and kinds.count(kind) > limit:
                raise InvalidRequestError(
                    f"{kinds.count(kind)} {kind}s in one request, over {self.service}'s limit "
                    f"of {limit}",
                    path="messages",
                )


ANTHROPIC_LIMITS = MediaLimits("Anthropic", 5 * MB, 32 * MB, images=100, pdf_pages=100)
BEDROCK_LIMITS = MediaLimits(
    "Bedrock", 3_750_000, 4_500_000, images=20, documents=5, pdf_pages=None
)
OPENAI_LIMITS = MediaLimits("OpenAI", 20 * MB, 32 * MB, images=500, pdf_pages=100)


# -- decoding ----------------------------------------------------------------------------------
def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError("expected a string", path=where)
    return value


def _base64(value: Any, where: str) -> bytes:
    try:
        return base64.b64decode(_string(value, where), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("not valid base64", path=where) from None


def _media_type(kind: str, media_type: Any, where: str) -> str:
    known = FORMATS[kind]
    if kind == "document" and isinstance(media_type, str) and media_type.startswith("text/"):
        return media_type
    if media_type not in known:
        raise InvalidRequestError(
            f"unsupported {kind} media type {media_type!r} ({', '.join(known)} are supported)",
            path=where,
        )
    return str(media_type)


def _url(value: Any, where: str) -> str:
    url = _string(value, where)
    if not url.startswith(("http://", "https://")):
        raise InvalidRequestError("expected an http:// or https:// URL", path=where)
    return url


def from_data_url(kind: MediaKind, value: Any, where: str, filename: str | None = None) -> Source:
    """A ``data:`` URL (or, for a file, bare base64 typed by its filename) or an http(s) URL."""
    text = _string(value, where)
    match = DATA_URL.match(text)
    if match is None:
        if text.startswith(("http://", "https://")):
            return Source(url=text)
        if kind != "document":
            raise InvalidRequestError("expected a data: URL or an http(s) URL", path=where)
        media_type = media_type_named(filename or "", "document")
        return Source(_media_type(kind, media_type, where), _base64(text, where))
    payload = text[match.end() :]
    data = _base64(payload, where) if match["b64"] else unquote_to_bytes(payload)
    media_type = (match["type"] or "").lower() or media_type_named(filename or "", kind)
    return Source(_media_type(kind, media_type, where), data)


def sniffed_media_type(data: bytes) -> str | None:
    """An image's or a PDF's media type, from its first bytes (``None`` for anything else)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in MAGIC.items() if data.startswith(magic)), None)


def media_type_named(name: str, kind: str = "document") -> str:
    """The media type a file's extension names (``""`` when none does)."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    suffix = {"jpg": "jpeg", "markdown": "md", "htm": "html", "text": "txt"}.get(suffix, suffix)
    for media_type, extension in FORMATS[kind].items():
        if extension == suffix:
            return media_type
    return ""


def from_anthropic(block: Mapping[str, Any], where: str) -> MediaBlock:
    """An Anthropic ``image`` or ``document`` block."""
    kind: MediaKind = block["type"]
    if kind not in ("image", "document"):
        raise InvalidRequestError(f"{kind} blocks exist only in Bedrock's Converse API", path=where)
    source = block.get("source")
    at = f"{where}.source"
    if not isinstance(source, Mapping):
        raise InvalidRequestError("field required", path=at)
    source_type = source.get("type")
    if source_type == "base64":
        media_type = _media_type(kind, source.get("media_type"), f"{at}.media_type")
        parsed = Source(media_type, _base64(source.get("data"), f"{at}.data"))
    elif source_type == "url":
        parsed = Source(url=_url(source.get("url"), f"{at}.url"))
    elif kind == "document" and source_type == "text":
        data = _string(source.get("data"), f"{at}.data").encode()
        parsed = Source("text/plain", data)
    elif kind == "document" and source_type == "content":
        content = source.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise InvalidRequestError("expected a string or text blocks", path=f"{at}.content")
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise InvalidRequestError(
                    "only text blocks are supported in a content source", path=f"{at}.content.{i}"
                )
            parts.append(_string(part.get("text"), f"{at}.content.{i}.text"))
        parsed = Source("text/plain", parts=tuple(parts))
    elif source_type == "file":
        raise InvalidRequestError(
            "file sources need the Files API, which this server does not have; send the "
            "content as base64",
            path=f"{at}.type",
        )
    else:
        kinds = "base64, url, text, content" if kind == "document" else "base64, url"
        raise InvalidRequestError(f"expected a source type among {kinds}", path=f"{at}.type")
    citations = block.get("citations")
    return MediaBlock(
        kind,
        parsed,
        title=_optional_string(block, "title", where),
        context=_optional_string(block, "context", where),
        citations=bool(citations.get("enabled")) if isinstance(citations, Mapping) else None,
        cache_control=block.get("cache_control"),
    )


def _optional_string(block: Mapping[str, Any], name: str, where: str) -> str | None:
    value = block.get(name)
    return None if value is None else _string(value, f"{where}.{name}")


def from_converse(kind: MediaKind, value: Any, where: str) -> MediaBlock:
    """A Converse ``image``/``document``/``video`` block (its blob as base64 in the JSON)."""
    at = f"{where}.{kind}"
    if not isinstance(value, Mapping):
        raise InvalidRequestError("expected an object", path=at)
    formats = {extension: media_type for media_type, extension in FORMATS[kind].items()}
    media_type = formats.get(value.get("format"))  # type: ignore[arg-type]
    if media_type is None:
        raise InvalidRequestError(
            f"must be one of {', '.join(formats)}, got {value.get('format')!r}",
            path=f"{at}.format",
        )
    source = value.get("source")
    if not isinstance(source, Mapping) or len(source) != 1:
        raise InvalidRequestError("expected exactly one source member", path=f"{at}.source")
    member, content = next(iter(source.items()))
    if member == "bytes":
        parsed = Source(media_type, _base64(content, f"{at}.source.bytes"))
    elif member == "s3Location":
        if not isinstance(content, Mapping) or not isinstance(content.get("uri"), str):
            raise InvalidRequestError("field required", path=f"{at}.source.s3Location.uri")
        parsed = Source(media_type, s3=dict(content))
    elif kind == "document" and member == "text":
        parsed = Source("text/plain", _string(content, f"{at}.source.text").encode())
    elif kind == "document" and member == "content":
        if not isinstance(content, list):
            raise InvalidRequestError("expected a list", path=f"{at}.source.content")
        parts = tuple(
            _string(part.get("text") if isinstance(part, Mapping) else None, f"{at}.source.{i}")
            for i, part in enumerate(content)
        )
        parsed = Source("text/plain", parts=parts)
    else:
        raise InvalidRequestError(f"unsupported source {member!r}", path=f"{at}.source")
    title = None
    if kind == "document":
        title = _string(value.get("name"), f"{at}.name")
    citations = value.get("citations")
    return MediaBlock(
        kind,
        parsed,
        title=title,
        context=_optional_string(value, "context", at),
        citations=bool(citations.get("enabled")) if isinstance(citations, Mapping) else None,
    )


def from_openai_part(part: Mapping[str, Any], where: str) -> MediaBlock:
    """A Chat Completions ``image_url`` or ``file`` part, or a Responses ``input_image`` or
    ``input_file`` part."""
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        return MediaBlock("image", from_data_url("image", url, f"{where}.image_url.url"))
    if kind == "input_image":
        if part.get("file_id") is not None:
            raise _file_id(f"{where}.file_id")
        return MediaBlock("image", from_data_url("image", part.get("image_url"), where))
    file = part.get("file") if kind == "file" else part
    at = f"{where}.file" if kind == "file" else where
    if not isinstance(file, Mapping):
        raise InvalidRequestError("expected an object", path=at)
    if file.get("file_id") is not None:
        raise _file_id(f"{at}.file_id")
    filename = file.get("filename")
    filename = None if filename is None else _string(filename, f"{at}.filename")
    given = file.get("file_data") if file.get("file_data") is not None else file.get("file_url")
    if given is None:
        raise InvalidRequestError("field required", path=f"{at}.file_data")
    return MediaBlock("document", from_data_url("document", given, at, filename), title=filename)


def _file_id(where: str) -> InvalidRequestError:
    return InvalidRequestError(
        "file ids need the Files API, which this server does not have; send the file's data",
        path=where,
    )


# -- encoding ----------------------------------------------------------------------------------
def to_converse(block: MediaBlock) -> dict[str, Any]:
    """The Converse block boto3 takes (raw bytes: boto3 encodes them). URL sources must have
    been fetched first (Bedrock reads none)."""
    source = block.source
    if source.url is not None:
        raise InvalidRequestError("Bedrock reads no URLs: fetch the content first")
    media_type = "text/plain" if source.text is not None else source.media_type
    fmt = FORMATS[block.type].get(media_type) or ("txt" if block.type == "document" else "")
    if not fmt:
        raise InvalidRequestError(f"Bedrock reads no {block.type} of type {media_type!r}")
    if source.s3 is not None:
        body_source: dict[str, Any] = {"s3Location": dict(source.s3)}
    elif source.parts is not None:
        body_source = {"content": [{"text": part} for part in source.parts]}
    else:
        body_source = {"bytes": source.data or b""}
    body: dict[str, Any] = {"format": fmt, "source": body_source}
    if block.type == "document":
        body["name"] = converse_name(block.title or "document")
        if block.context is not None:
            body["context"] = block.context
        if block.citations is not None:
            body["citations"] = {"enabled": block.citations}
    return {block.type: body}


def converse_name(title: str) -> str:
    """A document name Bedrock accepts: letters, digits, single spaces, ``-()[]`` (no dots)."""
    name = re.sub(r"[^A-Za-z0-9\-()\[\] ]+", " ", title)
    return re.sub(r" {2,}", " ", name).strip()[:200] or "document"


def to_openai_part(block: MediaBlock, responses: bool = False) -> dict[str, Any]:
    """A Chat Completions content part (or, with ``responses``, a Responses input part)."""
    source = block.source
    if block.type == "video" or source.s3 is not None:
        what = "videos" if block.type == "video" else "S3 locations"
        raise InvalidRequestError(f"the OpenAI API reads no {what}")
    if block.type == "document" and source.text is not None:
        text = source.text if block.title is None else f"{block.title}\n\n{source.text}"
        return {"type": "input_text" if responses else "text", "text": text}
    url = source.url if source.url is not None else source.data_url()
    if block.type == "image":
        if responses:
            return {"type": "input_image", "image_url": url, "detail": "auto"}
        return {"type": "image_url", "image_url": {"url": url}}
    file: dict[str, Any] = {"filename": block.title or "document.pdf"}
    file["file_url" if source.url is not None and responses else "file_data"] = url
    return {"type": "input_file", **file} if responses else {"type": "file", "file": file}


# -- reading -----------------------------------------------------------------------------------
def _pdf(data: bytes, where: str) -> Any:
    import pypdf

    try:
        return pypdf.PdfReader(io.BytesIO(data))
    except Exception as error:  # pypdf raises many kinds on a damaged file
        raise InvalidRequestError(f"not a readable PDF ({error})", path=where) from None


def document_text(block: MediaBlock, where: str) -> str:
    """A document as a text-only model reads it: a PDF's text page by page, each marked with
    its number (what the real APIs give a model beside the page images), or the text itself."""
    source = block.source
    text = source.text
    if text is None and source.media_type == "application/pdf" and source.data is not None:
        pages = _pdf(source.data, where).pages
        text = "\n\n".join(
            f"[page {number}]\n{page.extract_text().strip()}"
            for number, page in enumerate(pages, 1)
        )
    if text is None:
        what = source.media_type or "URL"
        raise InvalidRequestError(
            f"documents of type {what} cannot be read as text here (PDF and text documents can)",
            path=where,
        )
    head = f"Document: {block.title}\n" if block.title else "Document:\n"
    tail = f"\n(Context: {block.context})" if block.context else ""
    return f"{head}{text}{tail}"
