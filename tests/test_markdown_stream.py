"""The streamed Markdown renderer against rich itself: fed in random token splits, a reply ends up
as exactly what ``rich.markdown.Markdown`` renders for the complete text (same characters on
each line, same styles, code tokens included), on recorded replies of the embedded model and on
hand-written edge cases; and what a terminal shows at the end (the previews erased) is that too.
"""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.markdown import Markdown
from rich.segment import Segment

from streamchat.cli.markdown import CODE_WINDOW, MarkdownStream, supports_hyperlinks

DATA = Path(__file__).parent / "data" / "markdown_replies.json"
Lines = list[list[tuple[str, str]]]


def console(width: int) -> Console:
    return Console(file=io.StringIO(), width=width, force_terminal=True, color_system="truecolor")


def normal(lines: list[list[Segment]]) -> Lines:
    """Lines as (text, style) runs, adjacent runs of one style joined."""
    return [
        [(s.text, str(s.style) if s.style else "") for s in Segment.simplify(line) if s.text]
        for line in lines
    ]


def rich_lines(text: str, width: int, hyperlinks: bool = True) -> Lines:
    """What rich renders for the complete reply."""
    out = console(width)
    markdown = Markdown(text, hyperlinks=hyperlinks)
    return normal(out.render_lines(markdown, out.options.update(height=None), pad=False))


def tokens(text: str, seed: int) -> list[str]:
    """The text in random pieces of 1 to 12 characters, as a model's tokens come."""
    rnd, pieces, i = random.Random(seed), [], 0
    while i < len(text):
        n = rnd.choice([1, 1, 2, 3, 4, 4, 5, 6, 8, 12])
        pieces.append(text[i : i + n])
        i += n
    return pieces


def streamed(pieces: list[str], width: int, **options: object) -> tuple[Lines, str]:
    """The finished lines, and everything written, after feeding ``pieces`` and closing."""
    stream = MarkdownStream(console(width), keep_lines=True, **options)  # type: ignore[arg-type]
    written = "".join(stream.feed(piece) for piece in pieces) + stream.close()
    assert stream.lines is not None
    return normal(stream.lines), written


def texts(lines: Lines) -> list[str]:
    return ["".join(text for text, _ in line) for line in lines]


class Screen:
    """A terminal, as far as the renderer drives it: text (wide characters take two cells),
    CR, LF (as the tty's output translation makes it: CR LF), cursor up and right, erase to the
    end of the line and of the screen; colours, hyperlinks and other sequences change nothing
    on the grid."""

    SEQUENCE = re.compile(r"\x1b\[([\d;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b.")

    def __init__(self, width: int) -> None:
        self.width = width
        self.rows: list[list[str]] = [[]]
        self.row = self.col = 0

    def feed(self, data: str) -> Screen:
        from rich.cells import cell_len

        pos = 0
        for match in self.SEQUENCE.finditer(data):
            self._text(data[pos : match.start()], cell_len)
            pos = match.end()
            parameters, final = match.group(1) or "", match.group(2)
            if parameters.startswith("?"):
                continue  # private modes (cursor shown, bracketed paste...): nothing on the grid
            number = int(parameters.split(";")[0] or 1)
            if final == "A":
                self.row = max(0, self.row - number)
            elif final == "C":
                self.col = min(self.width, self.col + number)
            elif final == "K":
                del self.rows[self.row][self.col :]
            elif final == "J":
                del self.rows[self.row][self.col :]
                del self.rows[self.row + 1 :]
        self._text(data[pos:], cell_len)
        return self

    def _text(self, text: str, cell_len) -> None:  # type: ignore[no-untyped-def]
        for ch in text:
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row, self.col = self.row + 1, 0
                while len(self.rows) <= self.row:
                    self.rows.append([])
            else:
                cells = cell_len(ch)
                if self.col + cells > self.width:  # the pending wrap
                    self._text("\n", cell_len)
                line = self.rows[self.row]
                line.extend([" "] * (self.col - len(line)))
                line[self.col : self.col + cells] = [ch] + [""] * (cells - 1)
                self.col += cells

    def lines(self) -> list[str]:
        out = ["".join(row).rstrip() for row in self.rows]
        while out and not out[-1]:
            out.pop()
        return out


def shown_lines(lines: Lines) -> list[str]:
    out = [line.rstrip() for line in texts(lines)]
    while out and not out[-1]:
        out.pop()
    return out


EDGE_CASES = {
    "fence split across tokens": "Intro:\n\n```python\ndef f(x):\n    return x  # done\n```\n\nok",
    "fence without language": "```\nplain code\n\n\n```\ntext right after",
    "unclosed fence": "Here:\n```js\nconst a = 1;\nconsole.log(a)",
    "table cut off by max_tokens": "| name | value |\n|:-----|------:|\n| a | 1 |\n| bb | 2",
    "complete table": "Table:\n\n| a | b | c |\n|---|:-:|--:|\n| 1 | 22 | 333 |\n| x | y | z |\n",
    "300-character word": "A word: " + "x" * 300 + " and the rest of the sentence.",
    "CJK": "中文的句子没有空格，所以换行时按字符折行，每个字占两个格子。" * 4,
    "emoji": "Done 🎉 and 👍 or 🙂 " * 12,
    "nested lists": "- one\n  - one.a\n    - deep\n- two\n\n1. first\n2. second\n   more\n3. third",
    "ten numbered items": "\n".join(f"{n}. item {n}" for n in range(1, 11)),
    "lists changing marker": "- a\n* b\n+ c\n\n- loose\n\n- items",
    "quote and rule": "> quoted **bold**\n> line two\n\n---\n\n***\nafter rules",
    "headings": "# One\n## Two\n### Three\nSetext\n======\nmore\n---\n",
    "emphasis": "*it* **bold** ***both*** ~~gone~~ `code` **unclosed and *half",
    "links": "See [the docs](https://example.com/docs) and <https://example.org>.",
    "tabs in code": "```python\nif x:\n\treturn 1\n```",
    "indented fence": "  ```\n  two spaces\n    four\n  ```\n",
    "code with trailing spaces": "```\nline one   \nlast   \n   \n```",
    "indented code block": "Para\n\n    indented code\n    more\n\nafter",
    "no newline at all": "just a few words",
    "blank lines first": "\n\n\nHello",
}


@pytest.mark.parametrize("name", list(EDGE_CASES))
@pytest.mark.parametrize("width", [80, 37])
def test_edge_cases_stream_to_what_rich_renders(name: str, width: int) -> None:
    text = EDGE_CASES[name]
    expected = rich_lines(text, width)
    for seed in range(8):
        lines, written = streamed(tokens(text, seed), width)
        assert texts(lines) == texts(expected), (name, seed)  # same characters on each line
        assert lines == expected, (name, seed)  # and the same styles
        assert Screen(width).feed(written).lines() == shown_lines(expected), (name, seed)


def test_character_at_a_time_and_all_at_once_agree() -> None:
    text = "\n\n".join(EDGE_CASES.values())
    expected = rich_lines(text, 80)
    assert streamed(list(text), 80)[0] == expected
    assert streamed([text], 80)[0] == expected


def recorded_replies() -> list[str]:
    return json.loads(DATA.read_text(encoding="utf-8"))["replies"]


def test_the_corpus_holds_real_markdown() -> None:
    replies = recorded_replies()
    assert len(replies) >= 10
    joined = "\n".join(replies)
    for construct in ("```", "**", "\n- ", "\n1. ", "#"):
        assert construct in joined, construct


@pytest.mark.parametrize("index", range(len(json.loads(DATA.read_text("utf-8"))["replies"])))
def test_replies_of_the_embedded_model_stream_to_what_rich_renders(index: int) -> None:
    text = recorded_replies()[index]
    for width in (100, 52):
        expected = rich_lines(text, width)
        for seed in range(3):
            lines, written = streamed(tokens(text, seed), width)
            assert lines == expected, (index, width, seed)
            assert Screen(width).feed(written).lines() == shown_lines(expected)


def test_code_is_highlighted_token_by_token_as_rich_does() -> None:
    text = '```python\ndef f(x: int) -> str:\n    return "n=%d" % x  # why\n```\n'
    lines, _ = streamed(tokens(text, 1), 60)
    styles = {style for line in lines for _, style in line}
    assert len(styles) > 5  # keywords, names, strings, comments... each its colour
    assert lines == rich_lines(text, 60)


def test_a_code_line_is_shown_highlighted_once_it_is_complete() -> None:
    stream = MarkdownStream(console(60), keep_lines=True)
    stream.feed("```python\nimport os\n")
    assert stream.lines is not None
    assert any("import" in "".join(s.text for s in line) for line in stream.lines)
    stream.feed("x = os.sep")  # an incomplete line: previewed, not yet final
    assert not any("os.sep" in "".join(s.text for s in line) for line in stream.lines)


def test_a_finished_block_is_never_rendered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block goes through rich once: rendering calls grow with blocks, not with tokens."""
    import streamchat.cli.markdown as module

    rendered: list[str] = []
    real = module.Markdown

    def counting(source: str, **kwargs: object) -> Markdown:
        rendered.append(source)
        return real(source, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "Markdown", counting)
    paragraphs = [f"Paragraph {n} has **some** words in it.\n\n" for n in range(50)]
    streamed(tokens("".join(paragraphs), 3), 80)
    assert rendered == [p.rstrip("\n") + "\n" for p in paragraphs]  # each exactly once


def test_code_beyond_the_window_is_still_highlighted() -> None:
    code = "\n".join(f"value_{n} = {n}  # note" for n in range(CODE_WINDOW * 2))
    text = f"```python\n{code}\n```\n"
    assert streamed(tokens(text, 2), 70)[0] == rich_lines(text, 70)


def test_links_are_hyperlinks_or_show_the_url() -> None:
    text = "Read [the guide](https://example.com/guide) now."
    _, written = streamed([text], 80)
    assert "\x1b]8;" in written and "https://example.com/guide" in written
    lines, written = streamed([text], 80, hyperlinks=False)
    assert "\x1b]8;" not in written
    assert "the guide (https://example.com/guide)" in texts(lines)[0]
    assert lines == rich_lines(text, 80, hyperlinks=False)


def test_a_link_defined_before_its_use_is_a_link() -> None:
    text = '[docs]: https://example.com/docs "The docs"\n\nRead [docs] and [the guide][docs].\n'
    lines, written = streamed(tokens(text, 6), 80)
    assert lines == rich_lines(text, 80)
    assert "\x1b]8;" in written


def test_a_link_defined_after_its_use_stays_text_the_one_known_difference() -> None:
    text = "Read [docs] first.\n\n[docs]: https://example.com/docs\n"
    lines, _ = streamed(tokens(text, 6), 80)
    assert texts(lines)[0].rstrip() == "Read [docs] first."  # shown before the definition came
    assert texts(rich_lines(text, 80))[0].rstrip() == "Read docs first."  # rich saw it all


def test_hyperlinks_only_where_the_terminal_is_known_to_show_them() -> None:
    assert supports_hyperlinks({"TERM": "xterm-kitty"})
    assert supports_hyperlinks({"TERM": "xterm-256color", "VTE_VERSION": "7200"})
    assert not supports_hyperlinks({"TERM": "xterm-256color"})
    assert not supports_hyperlinks({"TERM": "dumb"})


def test_words_wrap_at_the_width_while_previewed_and_when_final() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron"
    stream = MarkdownStream(console(20), keep_lines=True)
    preview = "".join(stream.feed(piece) for piece in tokens(text, 4))
    shown = Screen(20).feed(preview).lines()
    assert all(len(line) <= 20 for line in shown)
    assert " ".join(" ".join(shown).split()) == text  # no word cut in two
    final = Screen(20).feed(preview + stream.close()).lines()
    assert final == shown_lines(rich_lines(text, 20))


def test_a_preview_taller_than_the_screen_stays_and_the_reply_goes_on() -> None:
    text = "\n".join(f"{n}. a numbered item that stays live" for n in range(1, 30)) + "\n\nEnd."
    stream = MarkdownStream(console(60), height=10)
    written = "".join(stream.feed(piece) for piece in tokens(text, 5)) + stream.close()
    screen = Screen(60).feed(written).lines()
    assert (
        not re.search(r"\x1b\[(\d+)A", written)
        or max(int(n) for n in re.findall(r"\x1b\[(\d+)A", written)) < 10
    )  # never moves up past the screen
    assert screen[-1] == "End."
    for n in range(1, 30):  # every item shown once
        assert sum(f"{n}" in line and "numbered" in line for line in screen) >= 1


MARKDOWN_PIECES = [
    "# Title\n", "## Sub *it*\n", "Some **bold** text and `code`.\n", "words " * 9 + "\n",
    "\n", "\n\n", "- item\n", "  - nested\n", "* star\n", "1. one\n", "2. two\n", "> quote\n",
    "---\n", "```python\n", "x = 1\n", "    return x  # c\n", "```\n", "~~~\n", "| a | b |\n",
    "|---|---|\n", "| 1 | 2 |\n", "text\n===\n", "[link](https://e.com) end\n", "中文 🙂 " * 9,
    "    indented\n", "<div>\n", "\t- tab item\n", "[ref]: https://e.com/r\n",
    "see [ref] or [Ref][ref]\n",
]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(MARKDOWN_PIECES), min_size=1, max_size=12).map("".join),
    st.integers(0, 10_000),
    st.sampled_from([24, 60, 100]),
    st.floats(0.2, 1.0),
)
def test_any_mix_of_blocks_in_any_split_renders_as_rich(
    text: str, seed: int, width: int, cut: float
) -> None:
    text = text[: int(len(text) * cut)]  # also cut anywhere, as max_tokens does
    expected = rich_lines(text, width)
    lines, written = streamed(tokens(text, seed), width)
    assert lines == expected
    assert Screen(width).feed(written).lines() == shown_lines(expected)
