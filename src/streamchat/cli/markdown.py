"""Incremental Markdown styling for streamed text: O(1) work per token, no re-rendering.

A terminal cannot redraw what has scrolled by cheaply, so instead of re-parsing the whole reply
per token (what ``rich.live`` + ``Markdown`` would do) this sans-IO styler decides each
character's style from a little state (line start, code fence, bold, inline code) and holds back
at most a few characters while a marker is ambiguous. Output is ``(text, style)`` segments with
rich style names.
"""

from __future__ import annotations

import re

Segment = tuple[str, str]

HEADING = "bold magenta"
CODE_BLOCK = "cyan"
FENCE = "dim"
INLINE_CODE = "cyan"
BOLD = "bold"
BULLET = "yellow"
QUOTE = "italic dim"

_LIST_ITEM = re.compile(r"( *)([-*+]|\d{1,3}[.)]) ")
_MAX_INDENT = 8  # a line indented deeper is plain text: no marker is looked for


class MarkdownStyler:
    """Feed text pieces, get styled segments; :meth:`close` flushes anything held back."""

    def __init__(self) -> None:
        self._pending = ""  # held back: an undecided line prefix or a lone '*' / '`'
        self._at_line_start = True
        self._in_fence = False
        self._line_style = ""  # heading / quote style for the rest of the line
        self._bold = False
        self._code = False

    def feed(self, text: str) -> list[Segment]:
        out: list[Segment] = []
        buffer = self._pending + text
        self._pending = ""
        i = 0
        while i < len(buffer):
            if self._at_line_start:
                consumed = self._line_prefix(buffer, i, out)
                if consumed is None:  # undecided: wait for more text
                    self._pending = buffer[i:]
                    return out
                i = consumed
                continue
            ch = buffer[i]
            if ch == "\n":
                self._emit(out, "\n", (self._in_fence and CODE_BLOCK) or "")
                self._at_line_start, self._line_style = True, ""
                if not self._in_fence:
                    self._bold = self._code = False
                i += 1
                continue
            if self._in_fence or self._line_style == FENCE:
                end = buffer.find("\n", i)
                end = len(buffer) if end == -1 else end
                self._emit(out, buffer[i:end], self._line_style or CODE_BLOCK)
                i = end
                continue
            if ch == "`":
                self._code = not self._code
                i += 1
                continue
            if ch == "*" and not self._code:
                if i + 1 == len(buffer):
                    self._pending = "*"
                    return out
                if buffer[i + 1] == "*":
                    self._bold = not self._bold
                    i += 2
                    continue
            j = i + 1
            while j < len(buffer) and buffer[j] not in "\n`*":
                j += 1
            self._emit(out, buffer[i:j], self._style())
            i = j
        return out

    def close(self) -> list[Segment]:
        """Flush held-back text at the end of a reply and reset for the next one."""
        pending, self._pending = self._pending, ""
        out: list[Segment] = []
        if pending:
            self._emit(out, pending, self._style())
        self.__init__()  # type: ignore[misc]
        return out

    def _style(self) -> str:
        parts = [self._line_style]
        if self._bold:
            parts.append(BOLD)
        if self._code:
            parts.append(INLINE_CODE)
        return " ".join(p for p in parts if p)

    @staticmethod
    def _emit(out: list[Segment], text: str, style: str) -> None:
        if not text:
            return
        if out and out[-1][1] == style:
            out[-1] = (out[-1][0] + text, style)
        else:
            out.append((text, style))

    def _line_prefix(self, buffer: str, i: int, out: list[Segment]) -> int | None:
        """Classify a line from its first characters; ``None`` while it cannot be decided."""
        rest = buffer[i:]
        newline = rest.find("\n")
        head = rest if newline == -1 else rest[:newline]
        complete = newline != -1
        stripped = head.lstrip(" ")
        if len(head) - len(stripped) > _MAX_INDENT:
            self._at_line_start = False
            return i
        if stripped.startswith("```"):  # the main loop shows the line, e.g. "```python", as is
            self._in_fence = not self._in_fence
            self._line_style, self._at_line_start = FENCE, False
            return i
        if not complete and "```".startswith(stripped):  # also spaces: an indented fence?
            return None
        if self._in_fence:
            self._at_line_start = False
            return i
        if stripped.startswith("#"):
            hashes = len(stripped) - len(stripped.lstrip("#"))
            after = stripped[hashes : hashes + 1]
            if not after and not complete and hashes <= 6:
                return None
            if after == " " and hashes <= 6:
                self._line_style, self._at_line_start = HEADING, False
                return i + len(head) - len(stripped) + hashes + 1
        elif stripped.startswith(">"):
            if stripped == ">" and not complete:
                return None
            self._line_style, self._at_line_start = QUOTE, False
            self._emit(out, "│ ", QUOTE)
            return i + len(head) - len(stripped) + (2 if stripped.startswith("> ") else 1)
        item = _LIST_ITEM.match(head)
        if item:
            marker = item.group(2)
            bullet = "•" if marker in "-*+" else marker
            self._emit(out, item.group(1) + bullet + " ", BULLET)
            self._at_line_start = False
            return i + item.end()
        if not complete and _could_be_marker(head):
            return None
        self._at_line_start = False
        return i


def _could_be_marker(head: str) -> bool:
    """True while ``head`` may still grow into a list item, heading or fence marker."""
    stripped = head.lstrip(" ")
    if not stripped:
        return True
    if stripped[0] in "-*+":
        return len(stripped) == 1
    if stripped[0].isdigit():
        digits = len(stripped) - len(stripped.lstrip("0123456789"))
        tail = stripped[digits:]
        return digits <= 3 and tail in ("", ".", ")")
    return False
