"""Incremental Markdown styling for streamed text: O(1) work per token, no re-rendering.

A terminal cannot redraw what has scrolled by cheaply, so instead of re-parsing the whole reply
per token (what ``rich.live`` + ``Markdown`` would do) this sans-IO styler decides each
character's style from a little state (line start, code fence, bold, inline code) and holds back
at most a few characters while a marker is ambiguous. Output is ``(text, style)`` segments with
rich style names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from rich.cells import cell_len
from rich.color import ColorSystem
from rich.console import Console
from rich.markdown import Markdown
from rich.segment import Segment as RichSegment
from rich.style import Style
from rich.syntax import Syntax

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


# ---------------------------------------------------------------------------------------------
# Rich's fidelity, still incremental: each finished block rendered once by rich itself.

_PARSER_CACHE: list[Any] = []
_PIECES = re.compile(r"\n|[ ]+|[^ \n]+")
_FENCE_CLOSE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")
_COMPLETE_AT_BLANK = frozenset({"paragraph_open", "table_open", "blockquote_open"})
_COLOR_SYSTEMS = {
    "standard": ColorSystem.STANDARD,
    "256": ColorSystem.EIGHT_BIT,
    "truecolor": ColorSystem.TRUECOLOR,
    "windows": ColorSystem.WINDOWS,
}
CODE_WINDOW = 60  # lines of a code block lexed again to highlight its newest line
_ESCAPE_CLEAR = "\x1b[J"


def _parser() -> Any:
    """The markdown-it parser rich uses (strikethrough and tables), built once."""
    if not _PARSER_CACHE:
        from markdown_it import MarkdownIt

        _PARSER_CACHE.append(MarkdownIt().enable("strikethrough").enable("table"))
    return _PARSER_CACHE[0]


def supports_hyperlinks(environ: Mapping[str, str]) -> bool:
    """Whether the terminal is one known to show OSC 8 hyperlinks (else the URL is printed)."""
    term = environ.get("TERM", "")
    program = environ.get("TERM_PROGRAM", "")
    return bool(
        environ.get("VTE_VERSION")
        or environ.get("KITTY_WINDOW_ID")
        or environ.get("WT_SESSION")
        or environ.get("WEZTERM_EXECUTABLE")
        or program in ("iTerm.app", "WezTerm", "vscode", "ghostty", "Hyper", "Tabby")
        or term in ("xterm-kitty", "xterm-ghostty", "foot", "alacritty", "wezterm")
    )


class _Preview:
    """The block still being written, shown as it streams (cheaply styled, words wrapped at the
    width) and erased once the block is complete. Tracks the rows it used, to erase them."""

    def __init__(self, width: int, render: Callable[[str, str], str]) -> None:
        self.width = max(width, 2)
        self.render = render
        self.reset(markdown=True)

    def reset(self, *, markdown: bool) -> None:
        self.styler: MarkdownStyler | None = MarkdownStyler() if markdown else None
        self.rows = 0  # rows below the first one
        self.col = 0
        self.word: list[Segment] = []  # the word at the end of the row (moved down whole)
        self.word_cells = 0
        self.shown = False

    def clear(self, *, markdown: bool) -> str:
        """Erase what was shown; ready for the next block."""
        out = ""
        if self.shown:
            out = "\r" + (f"\x1b[{self.rows}A" if self.rows else "") + _ESCAPE_CLEAR
        self.reset(markdown=markdown)
        return out

    def feed(self, text: str) -> str:
        segments = self.styler.feed(text) if self.styler is not None else [(text, "")]
        return self.write(segments) if segments else ""

    def write(self, segments: list[Segment]) -> str:
        out: list[str] = []
        width, render = self.width, self.render
        for chunk, style in segments:
            for piece in _PIECES.findall(chunk):
                self.shown = True
                if piece == "\n":
                    out.append("\n")
                    self._new_row()
                    continue
                cells = cell_len(piece)
                if piece[0] == " ":
                    self.word, self.word_cells = [], 0
                    if self.col + cells > width:  # spaces at the edge end the row
                        out.append("\n")
                        self._new_row()
                    else:
                        out.append(render(piece, style))
                        self.col += cells
                    continue
                if self.col + cells > width and self.col > 0:
                    start = self.col - self.word_cells
                    if self.word and start > 0 and self.word_cells + cells <= width:
                        out.append(f"\r\x1b[{start}C\x1b[K\n")  # move the word down whole
                        word, word_cells = self.word, self.word_cells
                        self._new_row()
                        out.extend(render(t, s) for t, s in word)
                        self.word, self.word_cells = word, word_cells
                        self.col = word_cells
                    elif not self.word:
                        out.append("\n")
                        self._new_row()
                while self.col + cell_len(piece) > width:  # longer than a row: fold it
                    cut = _fit(piece, width - self.col) or (self.col == 0)  # one wide char
                    out.append(render(piece[:cut], style) + "\n")
                    self._new_row()
                    piece = piece[cut:]
                out.append(render(piece, style))
                self.col += cell_len(piece)
                self.word.append((piece, style))
                self.word_cells += cell_len(piece)
        return "".join(out)

    def _new_row(self) -> None:
        self.rows += 1
        self.col = 0
        self.word, self.word_cells = [], 0


def _definitions(references: dict[str, dict[str, str]]) -> str:
    """Link reference definitions as Markdown, to put before a block rendered on its own. (A
    definition that comes after the link it defines is the one thing a stream cannot know in
    time: that link stays text.)"""
    lines = []
    for label, target in references.items():
        title = target.get("title") or ""
        quoted = ' "' + title.replace('"', '\\"') + '"' if title else ""
        lines.append(f"[{label}]: <{target.get('href', '')}>{quoted}\n")
    return "".join(lines) + "\n"


def _fit(text: str, cells: int) -> int:
    """How many leading characters of ``text`` fit in ``cells``."""
    used = 0
    for index, ch in enumerate(text):
        used += cell_len(ch)
        if used > cells:
            return index
    return len(text)


class _Fence:
    """A fenced code block being streamed: each line highlighted once it is complete."""

    def __init__(self, info: str, opener: str, theme: str) -> None:
        stripped = opener.lstrip(" ")
        self.indent = len(opener) - len(stripped)
        self.marker = stripped[: len(stripped) - len(stripped.lstrip(stripped[0]))]
        self.lexer_name = info.partition(" ")[0] or "text"
        self.theme = theme
        self.lines: list[str] = []  # the code so far (a window of it)
        self.held: list[str] = []  # blank lines that may turn out to be trailing (rich drops)
        self.lexer: Any = None

    def closes(self, line: str) -> bool:
        match = _FENCE_CLOSE.fullmatch(line)
        return (
            bool(match)
            and match.group(1)[0] == self.marker[0]
            and (len(match.group(1)) >= len(self.marker))
        )

    def code(self, line: str) -> str:
        """The line as code: the fence's indentation removed, as markdown-it does."""
        spaces = len(line) - len(line.lstrip(" "))
        return line[min(spaces, self.indent) :]


class MarkdownStream:
    """Streamed Markdown for a terminal, rendered as ``rich.markdown.Markdown`` renders it.

    Feed text pieces, write what :meth:`feed` returns (ANSI text). A top-level block (paragraph,
    heading, list, quote, table, rule) is previewed while it streams, then replaced by rich's
    rendering of that block alone once it is complete — rich renders top-level blocks
    independently, blank lines between them, so the blocks joined are rich's rendering of the
    whole reply. Items of a bullet list are rendered as each completes; a fenced code block is
    highlighted by Pygments (rich's ``Syntax``) a line at a time. Nothing finished is rendered
    again: per token the work is the preview of that token, plus, when a line completes, a
    markdown-it parse of the unfinished block and rich's rendering of what just finished.

    ``height``: a preview taller than the screen could not be erased; when one nearly fills the
    screen, its complete lines stay as previewed and the block goes on from there.
    ``keep_lines``: record the finished lines as rich ``Segment`` lists (tests).
    """

    def __init__(
        self,
        console: Console,
        *,
        hyperlinks: bool = True,
        code_theme: str = "monokai",
        height: int | None = None,
        keep_lines: bool = False,
    ) -> None:
        self.console = console
        self.options = console.options.update(height=None)
        self.width = self.options.max_width
        self.hyperlinks = hyperlinks
        self.code_theme = code_theme
        self.height = height
        self.lines: list[list[RichSegment]] | None = [] if keep_lines else None
        self._color = _COLOR_SYSTEMS.get(console.color_system or "")
        self._styles: dict[str, Style] = {}
        self._preview = _Preview(self.width, self._render_text)
        self._pad_line: str | None = None
        self._reset()

    def _reset(self) -> None:
        self._source = ""  # complete lines of the unfinished top-level block
        self._partial = ""  # the line being written
        self._blocks = 0  # top-level blocks started
        self._last_hr = False  # rich puts no blank line after a rule
        self._continuing = False  # the unfinished block is a list some items of which are shown
        self._fence: _Fence | None = None
        self._references: dict[str, dict[str, str]] = {}  # [label]: url definitions seen
        self._out: list[str] = []  # finished output of this feed

    # -- feeding ----------------------------------------------------------------------------

    def feed(self, text: str) -> str:
        """Take the next piece of the reply; the ANSI text to write."""
        if not text:
            return ""
        *complete, self._partial = (self._partial + text).split("\n")
        if not complete:
            return self._show(text)
        for line in complete:
            self._line(line)
        if not self._out:
            out = self._show(text)
            if self.height and self._source and self._preview.rows >= self.height - 2:
                self._freeze()
            return out
        return self._flush()

    def close(self) -> str:
        """The reply ended (or was cut short): finish every block; ready for a new reply."""
        partial, self._partial = self._partial, ""
        if self._fence is not None:
            if partial and not self._fence.closes(partial):
                self._code_line(self._fence.code(partial))
            self._end_fence()
        elif (self._source + partial).strip():
            self._source += partial
            self._settle(final=True)
        out = self._flush(preview=False)
        self._reset()
        return out

    def _show(self, text: str) -> str:
        return self._preview.feed(text)

    def _freeze(self) -> None:
        """The preview nearly fills the screen and could not be erased much longer: its complete
        lines stay as shown, and the block goes on from the line being written."""
        if not self._continuing:
            self._blocks += 1
            self._last_hr = False
        self._continuing = True
        self._source = ""
        self._preview.rows = 0

    def _flush(self, *, preview: bool = True) -> str:
        """Erase the preview, write what finished, preview the unfinished rest again."""
        fence = self._fence is not None
        out = [self._preview.clear(markdown=not fence)]
        out += self._out
        self._out = []
        if preview:
            pending = ("" if fence else self._source) + self._partial
            if pending:
                out.append(self._show(pending))
        return "".join(out)

    def _line(self, line: str) -> None:
        if self._fence is not None:
            self._fence_line(line)
            return
        if not self._source and not line.strip():
            return  # blank lines between blocks: rich's own spacing stands for them
        self._source += line + "\n"
        self._settle(final=False)

    def _settle(self, *, final: bool) -> None:
        """Parse the unfinished block's lines: render what is complete, keep the rest."""
        env: dict[str, Any] = {}
        tokens = _parser().parse(self._source, env)
        self._references.update(env.get("references", {}))
        tops = [t for t in tokens if t.level == 0 and t.nesting >= 0 and t.map]
        lines = self._source.splitlines(keepends=True)
        if not tops:
            if final or not self._source.strip():
                self._source = ""
            return
        last = tops[-1]
        done = len(tops) - 1
        blank_end = not lines[-1].strip()
        if (
            final
            or last.type in ("heading_open", "hr")
            or (last.type in _COMPLETE_AT_BLANK and blank_end)
        ):
            done = len(tops)
        for token in tops[:done]:
            self._block("".join(lines[token.map[0] : token.map[1]]), token.type)
        if done == len(tops):
            self._source = ""
            return
        self._source = "".join(lines[last.map[0] :])
        if last.type == "fence":
            self._start_fence(last.info, lines[last.map[0]].rstrip("\n"))
            self._source = ""
        elif last.type == "bullet_list_open":
            self._finished_items(tokens, last, lines)

    def _finished_items(self, tokens: list[Any], top: Any, lines: list[str]) -> None:
        """A bullet list renders item by item: show the items before the last one."""
        items = [
            t
            for t in tokens
            if t.type == "list_item_open" and t.level == 1 and t.map[0] >= top.map[0]
        ]
        if len(items) < 2:
            return
        start = items[-1].map[0]
        self._block("".join(lines[top.map[0] : start]), top.type, ends=False)
        self._source = "".join(lines[start:])

    # -- finished output -----------------------------------------------------------------------

    def _separate(self, lines: list[list[RichSegment]] | None = None) -> None:
        """Rich's spacing: a blank line between top-level blocks, except after a rule. A block
        rich renders with that blank line first (a list, quote or table: even first in the
        reply) gets no other."""
        if self._continuing:
            if lines and not lines[0]:
                del lines[0]  # more items of a list already begun: no blank line before them
            return
        if self._blocks and not self._last_hr and not (lines and not lines[0]):
            self._emit_lines([[]])
        self._blocks += 1

    def _block(self, source: str, kind: str, *, ends: bool = True) -> None:
        if self._references:  # rendered apart, a block still knows the links defined before it
            source = _definitions(self._references) + source
        markdown = Markdown(source, code_theme=self.code_theme, hyperlinks=self.hyperlinks)
        lines = self.console.render_lines(markdown, self.options, pad=False)
        self._separate(lines)
        self._emit_lines(lines)
        self._last_hr = kind == "hr"
        self._continuing = not ends

    def _emit_lines(self, lines: list[list[RichSegment]]) -> None:
        if self.lines is not None:
            self.lines.extend(lines)
        color, out = self._color, self._out
        for line in lines:
            for segment in line:
                text, style = segment.text, segment.style
                if style is not None and color is not None and text:
                    out.append(style.render(text, color_system=color))
                else:
                    out.append(text)
            out.append("\n")

    def _render_text(self, text: str, style: str) -> str:
        if not style or self._color is None:
            return text
        parsed = self._styles.get(style)
        if parsed is None:
            parsed = self._styles[style] = Style.parse(style)
        return parsed.render(text, color_system=self._color)

    # -- fenced code ---------------------------------------------------------------------------

    def _start_fence(self, info: str, opener: str) -> None:
        self._separate()
        self._fence = _Fence(info, opener, self.code_theme)
        self._emit_lines([self._padding_line()])

    def _fence_line(self, line: str) -> None:
        fence = self._fence
        assert fence is not None
        if fence.closes(line):
            self._end_fence()
        else:
            self._code_line(fence.code(line))

    def _code_line(self, code: str) -> None:
        """Highlight a complete code line, unless it may turn out to end the block: rich strips
        the code's trailing whitespace, so blank lines, or one ending in spaces, wait."""
        fence = self._fence
        assert fence is not None
        if not code.strip():
            fence.held.append(code)
            return
        for held in fence.held:
            self._highlight(held)
        fence.held = []
        if code != code.rstrip():
            fence.held.append(code)
        else:
            self._highlight(code)

    def _highlight(self, code: str) -> None:
        """One code line as rich's ``Syntax`` shows it in the block, lexed with the lines before
        it (a window of them: a construct opened further up may be missed)."""
        fence = self._fence
        assert fence is not None
        fence.lines.append(code)
        if len(fence.lines) > CODE_WINDOW:
            del fence.lines[: len(fence.lines) - CODE_WINDOW]
        if fence.lexer is None:
            fence.lexer = Syntax("", fence.lexer_name).lexer or fence.lexer_name
        count = len(fence.lines)
        syntax = Syntax(
            "\n".join(fence.lines),
            fence.lexer,
            theme=fence.theme,
            word_wrap=True,
            padding=(0, 1),
            line_range=(count, count),
        )
        self._emit_lines(self.console.render_lines(syntax, self.options, pad=False))

    def _end_fence(self) -> None:
        fence = self._fence
        if fence is not None:
            held = fence.held
            while held and not held[-1].strip():
                held.pop()
            for index, code in enumerate(held):
                self._highlight(code.rstrip() if index == len(held) - 1 else code)
            fence.held = []
        if fence is not None and not fence.lines:  # no code: rich shows one empty line
            syntax = Syntax("", "text", theme=self.code_theme, word_wrap=True, padding=(0, 1))
            self._emit_lines(self.console.render_lines(syntax, self.options, pad=False))
        self._emit_lines([self._padding_line()])
        self._fence = None
        self._last_hr = False

    def _padding_line(self) -> list[RichSegment]:
        syntax = Syntax("x", "text", theme=self.code_theme, word_wrap=True, padding=1)
        return self.console.render_lines(syntax, self.options, pad=False)[0]
