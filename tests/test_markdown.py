"""The incremental Markdown styler: styles per construct, the same result however the text is
split into pieces, held-back text flushed at the end, and a bounded hold-back per feed."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamchat.cli.markdown import (
    BOLD,
    BULLET,
    CODE_BLOCK,
    FENCE,
    HEADING,
    INLINE_CODE,
    QUOTE,
    MarkdownStyler,
    Segment,
)


def style_whole(text: str) -> list[Segment]:
    styler = MarkdownStyler()
    return merge(styler.feed(text) + styler.close())


def style_pieces(pieces: list[str]) -> list[Segment]:
    styler = MarkdownStyler()
    out: list[Segment] = []
    for piece in pieces:
        out += styler.feed(piece)
    return merge(out + styler.close())


def merge(segments: list[Segment]) -> list[Segment]:
    """Adjacent segments of one style joined: how they look, whatever the feeds' boundaries."""
    out: list[Segment] = []
    for text, style in segments:
        if not text:
            continue
        if out and out[-1][1] == style:
            out[-1] = (out[-1][0] + text, style)
        else:
            out.append((text, style))
    return out


def shown(segments: list[Segment]) -> str:
    return "".join(text for text, _ in segments)


def split_at(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({c % (len(text) + 1) for c in cuts}), len(text)]
    return [text[a:b] for a, b in pairwise(bounds)]


# Lines as a model writes them: an indent, maybe a marker (or a near miss), then words.
INDENTS = st.sampled_from(["", " ", "  ", "   ", "    ", "      ", "        ", "         "])
MARKERS = st.sampled_from(
    ["", "", "#", "# ", "## ", "###### ", "####### ", "#x", "- ", "-", "-5", "* ", "+ ",
     "1. ", "12) ", "123.", "1234. ", "1.5", "> ", ">", ">>", "```", "```py", "``", "`"]
)  # fmt: skip
WORDS = st.sampled_from(
    [" ", "a", " word", "**", "*", "`", "```", "x*y", " 2 * 3", "_", "é", "🙂", "#", "- "]
)
LINES = st.lists(
    st.tuples(INDENTS, MARKERS, st.lists(WORDS, max_size=6)).map(
        lambda line: line[0] + line[1] + "".join(line[2])
    ),
    max_size=8,
)


@settings(max_examples=1000, deadline=None)
@given(
    st.tuples(LINES, st.booleans()).map(lambda t: "\n".join(t[0]) + ("\n" if t[1] else "")),
    st.lists(st.integers(0, 10_000), max_size=20),
)
@example("        - deep item\n", [8])
@example("          # not a heading\n", [10])
@example("####### x\n", [3, 7])
@example("```python\ncode\n```\n", [2, 5, 12])
@example("```\n   ```\nafter **b**", [4, 5, 6, 7])
def test_any_split_styles_the_text_as_feeding_it_whole(text: str, cuts: list[int]) -> None:
    whole = style_whole(text)
    assert style_pieces(split_at(text, cuts)) == whole
    assert style_pieces(list(text)) == whole


def test_a_heading_loses_its_hashes_and_is_styled_to_the_end_of_the_line() -> None:
    assert style_whole("## Title here\nbody") == [
        ("Title here", HEADING),
        ("\nbody", ""),
    ]


def test_seven_hashes_or_no_space_is_not_a_heading() -> None:
    assert style_whole("####### x\n#tag\n") == [("####### x\n#tag\n", "")]


def test_bold_loses_its_asterisks() -> None:
    assert style_whole("a **big** b") == [("a ", ""), ("big", BOLD), (" b", "")]


def test_a_single_asterisk_is_kept() -> None:
    assert shown(style_whole("2 * 3 = 6")) == "2 * 3 = 6"


def test_inline_code_loses_its_backticks_and_keeps_asterisks() -> None:
    assert style_whole("run `a**b` now") == [("run ", ""), ("a**b", INLINE_CODE), (" now", "")]


def test_bold_and_code_end_at_the_end_of_the_line() -> None:
    assert style_whole("**open\n`open\nplain") == [
        ("open", BOLD),
        ("\n", ""),
        ("open", INLINE_CODE),
        ("\nplain", ""),
    ]


def test_a_fenced_block_is_code_verbatim() -> None:
    assert style_whole("```python\nx = **kw  # `q`\n```\nafter **b**") == [
        ("```python", FENCE),
        ("\nx = **kw  # `q`\n", CODE_BLOCK),
        ("```", FENCE),
        ("\nafter ", ""),
        ("b", BOLD),
    ]


def test_bullets_become_dots_and_numbers_stay() -> None:
    assert style_whole("- one\n* two\n  + three\n12. four\n3) five\n") == [
        ("• ", BULLET),
        ("one\n", ""),
        ("• ", BULLET),
        ("two\n", ""),
        ("  • ", BULLET),
        ("three\n", ""),
        ("12. ", BULLET),
        ("four\n", ""),
        ("3) ", BULLET),
        ("five\n", ""),
    ]


def test_a_dash_without_a_space_is_not_a_bullet() -> None:
    assert style_whole("-5 degrees\n1.5 m\n") == [("-5 degrees\n1.5 m\n", "")]


def test_a_quote_gets_a_bar_and_the_quote_style() -> None:
    assert style_whole("> wise words\nplain") == [("│ wise words", QUOTE), ("\nplain", "")]


def test_bold_inside_a_heading_combines_the_styles() -> None:
    assert style_whole("# A **b**") == [("A ", HEADING), ("b", f"{HEADING} {BOLD}")]


def test_close_flushes_what_was_held_back() -> None:
    for held in ("-", "1.", "##", ">", "``", "   ", "a *"):
        styler = MarkdownStyler()
        first = styler.feed(held)
        assert shown(first) != held, held  # something was waiting for more text
        assert shown(first + styler.close()) == held, held


def test_close_resets_the_state_for_the_next_reply() -> None:
    styler = MarkdownStyler()
    styler.feed("```\ncode **and `bold")
    styler.close()
    assert styler.feed("# Next\n") == [("Next", HEADING), ("\n", "")]


def realistic_reply() -> str:
    """About 50 KB of what a model writes, with a few lines that look like markers for long."""
    section = (
        "## Section {n}\n\nSome **bold** text, `inline code` and 2 * 3 = 6.\n"
        "- a bullet with **bold**\n  - a nested one\n        - a deep one\n"
        "12. numbered\n> a quote\n\n```python\ndef f(x):\n    return x ** 2  # `q`\n```\n"
        "#################################### a rule of hashes ####################\n"
        "```" + "x" * 300 + "\n```\n"
        "                                        indented far\n"
        "--------------------------------------------------------------\n"
    )
    text, n = "", 0
    while len(text) < 50_000:
        text += section.format(n=n)
        n += 1
    return text


def test_held_back_text_stays_small_on_a_long_reply_fed_one_character_at_a_time() -> None:
    text = realistic_reply()
    styler = MarkdownStyler()
    out: list[Segment] = []
    longest = 0
    for ch in text:
        out += styler.feed(ch)
        longest = max(longest, len(styler._pending))
    out += styler.close()
    assert longest <= 16
    assert merge(out) == style_whole(text)
