"""A program in a pseudo-terminal, read as a person reads it: pexpect runs it, its output drives
a ``pyte`` screen (a VT100 emulator), and a test waits until the screen shows what it looks for.

Why not ``pexpect.expect`` on the raw output: prompt_toolkit redraws the line being edited as
keys arrive, so ``/stats`` may reach the terminal as ``/sta``, cursor moves, then ``ts``; and
the reply renderer draws previews that it erases. The screen is what is left after all that.
Lines that scroll off the top are kept (``pyte.HistoryScreen``), so nothing shown is lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import pexpect
import pyte

TIMEOUT = 60.0  # a hang guard, not a speed test: generous, the suite runs under load


def flowed(text: str) -> str:
    """``text`` with every run of whitespace (line breaks included) as one space: a phrase a
    terminal wrapped over two lines still reads as the phrase."""
    return " ".join(text.split())


class Terminal:
    """``argv`` running in a ``rows`` x ``columns`` pseudo-terminal, with its screen."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        rows: int = 50,
        columns: int = 200,
        timeout: float = TIMEOUT,
    ) -> None:
        self.child = pexpect.spawn(
            argv[0],
            list(argv[1:]),
            env=dict(env),
            dimensions=(rows, columns),
            encoding="utf-8",
            codec_errors="replace",
            timeout=timeout,
        )
        self.screen = pyte.HistoryScreen(columns, rows, history=100_000)
        self._stream = pyte.Stream(self.screen)
        self.output = ""  # everything the program wrote, escape codes included (for styles)
        self.timeout = timeout
        self.ended = False

    # -- keys ------------------------------------------------------------------------------------
    def send(self, keys: str) -> None:
        self.child.send(keys)

    def sendline(self, line: str = "") -> None:
        """Type ``line`` and press Enter (a terminal sends CR for it)."""
        self.child.send(line + "\r")

    def sendcontrol(self, key: str) -> None:
        """Ctrl + ``key``: ``"c"`` interrupts, ``"d"`` ends input."""
        self.child.sendcontrol(key)

    # -- the screen ------------------------------------------------------------------------------
    def _rows(self) -> list[dict[int, pyte.screens.Char]]:
        """Every line drawn so far: those scrolled off the top, then the screen's."""
        return [
            *self.screen.history.top,
            *(self.screen.buffer[y] for y in range(self.screen.lines)),
        ]

    def _line(self, row: dict[int, pyte.screens.Char]) -> str:
        return "".join(row[x].data for x in range(self.screen.columns)).rstrip()

    def lines(self) -> list[str]:
        """The text of every line drawn so far (trailing blank lines left out)."""
        out = [self._line(row) for row in self._rows()]
        while out and not out[-1]:
            out.pop()
        return out

    def text(self) -> str:
        return "\n".join(self.lines())

    def shows(self, text: str) -> bool:
        """Whether ``text`` is on screen, whatever line breaks the terminal put in it."""
        return flowed(text) in flowed(self.text())

    def count(self, text: str) -> int:
        """How many times ``text`` is on screen (see :meth:`shows`)."""
        return flowed(self.text()).count(flowed(text))

    def style(self, text: str) -> pyte.screens.Char:
        """How the first character of ``text`` (its first occurrence on screen) is drawn: its
        ``fg`` colour, ``bold``, ``italics``... (pyte keeps no "dim")."""
        for row in self._rows():
            cell_of = [x for x in range(self.screen.columns) for _ in row[x].data]  # per char
            found = "".join(row[x].data for x in range(self.screen.columns)).find(text)
            if found >= 0:
                return row[cell_of[found]]
        raise AssertionError(f"{text!r} is not on screen:\n{self.text()}")

    def labels(self, label: str) -> list[int]:
        """Indexes (in :meth:`lines`) of the lines that start with ``label`` drawn in bold: the
        program's own label (a prompt, a speaker), not the same words inside a message."""
        return [
            i
            for i, row in enumerate(self._rows())
            if self._line(row).startswith(label) and row[0].bold
        ]

    # -- waiting ---------------------------------------------------------------------------------
    def read(self, wait: float = 0.0) -> None:
        """Feed the screen whatever the program has written, waiting up to ``wait`` seconds for
        the first of it."""
        while not self.ended:
            try:
                data = self.child.read_nonblocking(65536, timeout=wait)
            except pexpect.TIMEOUT:
                return
            except pexpect.EOF:
                self.ended = True
                return
            self.output += data
            self._stream.feed(data)
            wait = 0  # then take what else is there at once

    def wait_for(self, what: str | Callable[[], object], timeout: float | None = None) -> None:
        """Wait until the screen shows the text ``what`` (see :meth:`shows`), or until the
        condition ``what()`` holds, reading the program's output meanwhile."""
        condition = (lambda: self.shows(what)) if isinstance(what, str) else what
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self.read()
        while not condition():
            left = deadline - time.monotonic()
            if self.ended or left <= 0:
                why = (
                    "the program ended"
                    if self.ended
                    else f"timed out after {timeout or self.timeout:g} s"
                )
                raise AssertionError(f"{why} before the screen showed {what!r}:\n{self.text()}")
            self.read(min(left, 0.5))

    def wait_for_exit(self, timeout: float | None = None) -> int | None:
        """Read until the program ends; its exit status (``None`` if a signal ended it)."""
        self.wait_for(lambda: self.ended, timeout)
        self.child.close()
        return self.child.exitstatus

    def close(self) -> None:
        self.child.close(force=True)
