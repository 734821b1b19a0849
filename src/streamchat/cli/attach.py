"""Files handed to a model with a prompt: ``ask -f PATH`` and the chat's ``/file PATH``.

A text file goes into the user turn as a fenced block headed by its name, after the prompt, so
the model (and the history, and a saved conversation) sees which text came from where. An image
(PNG, JPEG, GIF, WebP) or a PDF goes as an image or document block to a model that reads them;
for the embedded (text-only) models a PDF goes as its pages' text and an image is refused. Any
other binary file, or an oversized one, is refused in one line before anything is sent.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError
from ..media import MB, MediaBlock, Source, document_text, sniffed_media_type

MAX_ATTACHMENT_BYTES = 1_000_000  # a text file
MAX_MEDIA_BYTES = 32 * MB  # an image or a PDF (each service's own limits apply after)
_LANGUAGES = {  # a fence's info word for common extensions; anything else is named as is
    "py": "python",
    "js": "javascript",
    "ts": "typescript",
    "md": "markdown",
    "sh": "bash",
    "yml": "yaml",
    "rs": "rust",
    "rb": "ruby",
}


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str  # as the user gave it
    text: str
    media: MediaBlock | None = None  # an image or a PDF, sent as such

    @property
    def summary(self) -> str:
        """The attachment line a person sees: name, lines (or type), size."""
        if self.media is not None:
            size = len(self.media.source.data or b"")
            unit = f"{size} bytes" if size < 10_000 else f"{size / 1000:.0f} KB"
            return f"📎 {self.name} ({self.media.source.media_type}, {unit})"
        lines = self.text.count("\n") + (not self.text.endswith("\n") and bool(self.text))
        size = len(self.text.encode("utf-8"))
        unit = f"{size} bytes" if size < 10_000 else f"{size / 1000:.0f} KB"
        return f"📎 {self.name} ({lines} line{'s' if lines != 1 else ''}, {unit})"

    def block(self) -> str:
        """The file as it goes into the prompt: a fence no line of the file can close."""
        longest = max((len(run) for run in re.findall(r"`+", self.text)), default=0)
        mark = "`" * max(3, longest + 1)
        extension = Path(self.name).suffix.lstrip(".").lower()
        info = _LANGUAGES.get(extension, extension)
        body = self.text if self.text.endswith("\n") or not self.text else self.text + "\n"
        return f"File {self.name}:\n{mark}{info}\n{body}{mark}"


def read_attachment(path: str, text_only: str | None = None) -> Attachment:
    """The file at ``path``: text, or an image or PDF; for a model that reads only text (named
    by ``text_only``) a PDF as its pages' text. A one-line error for a missing, binary or huge
    file, or for an image and a text-only model."""
    expanded = os.path.expanduser(path)
    try:
        size = os.path.getsize(expanded)
        with open(expanded, "rb") as file:
            head = file.read(16)
        limit = MAX_MEDIA_BYTES if sniffed_media_type(head) else MAX_ATTACHMENT_BYTES
        if size > limit:
            raise InvalidRequestError(f"{path}: {size} bytes, more than the {limit} it may be")
        with open(expanded, "rb") as file:
            data = file.read()
    except IsADirectoryError:
        raise InvalidRequestError(f"{path}: is a directory, not a file") from None
    except OSError as error:
        raise InvalidRequestError(f"cannot read {path}: {error.strerror}") from None
    media_type = sniffed_media_type(data)
    if media_type is not None:
        name = Path(path).name
        kind = "document" if media_type == "application/pdf" else "image"
        block = MediaBlock(
            kind, Source(media_type, data), title=name if kind == "document" else None
        )
        if text_only is None:
            return Attachment(path, "", block)
        if kind == "image":
            raise InvalidRequestError(
                f"{path}: an image, and {text_only} reads no images "
                "(attach it for a model that does: anthropic/..., bedrock/..., openai/...)"
            )
        return Attachment(path, document_text(block, path))  # a text-only model reads the text
    if b"\x00" in data:
        raise InvalidRequestError(f"{path}: not a text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError(f"{path}: not UTF-8 text") from None
    return Attachment(path, text)


def with_attachments(prompt: str, attachments: list[Attachment]) -> str | list[dict[str, Any]]:
    """The user turn: the prompt, then each text file; then any image or PDF, as blocks."""
    parts = [prompt.strip()] if prompt.strip() else []
    parts += [attachment.block() for attachment in attachments if attachment.media is None]
    text = "\n\n".join(parts)
    media = [attachment.media.to_dict() for attachment in attachments if attachment.media]
    if not media:
        return text
    return [{"type": "text", "text": text}, *media] if text else media
