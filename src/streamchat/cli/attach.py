"""Text files handed to a model with a prompt: ``ask -f PATH`` and the chat's ``/file PATH``.

A file goes into the user turn as a fenced block headed by its name, after the prompt, so the
model (and the history, and a saved conversation) sees which text came from where. Only text
files: a binary or oversized file is refused in one line before anything is sent.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidRequestError

MAX_ATTACHMENT_BYTES = 1_000_000
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

    @property
    def summary(self) -> str:
        """The attachment line a person sees: name, lines, size."""
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


def read_attachment(path: str) -> Attachment:
    """The file at ``path`` as text; a one-line error for a missing, binary or huge file."""
    expanded = os.path.expanduser(path)
    try:
        size = os.path.getsize(expanded)
        if size > MAX_ATTACHMENT_BYTES:
            raise InvalidRequestError(
                f"{path}: {size} bytes, more than the {MAX_ATTACHMENT_BYTES} an attachment may be"
            )
        with open(expanded, "rb") as file:
            data = file.read()
    except IsADirectoryError:
        raise InvalidRequestError(f"{path}: is a directory, not a file") from None
    except OSError as error:
        raise InvalidRequestError(f"cannot read {path}: {error.strerror}") from None
    if b"\x00" in data:
        raise InvalidRequestError(f"{path}: not a text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError(f"{path}: not UTF-8 text") from None
    return Attachment(path, text)


def with_attachments(prompt: str, attachments: list[Attachment]) -> str:
    """The user turn: the prompt, then each file."""
    parts = [prompt.strip()] if prompt.strip() else []
    parts += [attachment.block() for attachment in attachments]
    return "\n\n".join(parts)
