"""StopMatcher: stop sequences found across streamed pieces, holding back only possible prefixes."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from streamchat.stop_sequences import StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, str | None]:
    """Feed the pieces as a provider does: emitted text, then the stop hit (or the flushed tail)."""
    matcher = StopMatcher(stops)
    out = ""
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out += text
        if hit is not None:
            return out, hit
    return out + matcher.flush(), None


def reference(stops: list[str], text: str) -> tuple[str, str | None]:
    """Generation stops at the first point where the text ends with a stop (the longest there)."""
    for end in range(1, len(text) + 1):
        hits = [s for s in stops if s and text[:end].endswith(s)]
        if hits:
            stop = max(hits, key=len)
            return text[: end - len(stop)], stop
    return text, None


def test_without_stop_sequences_text_passes_straight_through() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("Hello\nUs") == ("Hello\nUs", None)
    assert matcher.flush() == ""


def test_empty_stop_sequences_are_ignored() -> None:
    assert StopMatcher([""]).feed("abc") == ("abc", None)


def test_stop_inside_one_piece_cuts_the_text_before_it() -> None:
    assert StopMatcher(["7"]).feed("5, 6, 7, 8") == ("5, 6, ", "7")


def test_stop_split_across_pieces_is_found() -> None:
    matcher = StopMatcher(["\nUser:"])
    assert matcher.feed("Sure!\nU") == ("Sure!", None)
    assert matcher.feed("se") == ("", None)
    assert matcher.feed("r: next question") == ("", "\nUser:")


def test_held_back_prefix_is_released_when_it_is_not_a_stop() -> None:
    matcher = StopMatcher(["\nUser:"])
    assert matcher.feed("Hello\nUs") == ("Hello", None)
    assert matcher.feed("ually") == ("\nUsually", None)


def test_held_back_prefix_is_flushed_at_the_end_of_the_stream() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("the E") == ("the ", None)
    assert matcher.flush() == "E"
    assert matcher.flush() == ""


def test_only_a_possible_prefix_is_held_back() -> None:
    matcher = StopMatcher(["abc"])
    assert matcher.feed("xxab") == ("xx", None)
    assert matcher.feed("x") == ("abx", None)


def test_earliest_stop_wins() -> None:
    assert run(["world", "hello"], ["say hello world"]) == ("say ", "hello")
    assert run(["world", "hello"], ["say hel", "lo world"]) == ("say ", "hello")


def test_stop_completed_first_wins_however_the_text_is_split() -> None:
    # "c" is complete before "abcd" could be, so a model would have stopped at "c".
    assert run(["abcd", "c"], ["abcd"]) == ("ab", "c")
    assert run(["abcd", "c"], ["abc", "d"]) == ("ab", "c")


def test_longest_stop_wins_when_two_end_at_the_same_place() -> None:
    assert run(["b", "ab"], ["xab"]) == ("x", "ab")
    assert run(["b", "ab"], ["xa", "b"]) == ("x", "ab")


ALPHABET = "ab\n:"
texts = st.text(alphabet=ALPHABET, max_size=30)
stop_lists = st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=4), max_size=3)


@st.composite
def splits(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(texts)
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=len(text) + 1)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in pairwise(bounds)]


@given(stops=stop_lists, split=splits())
def test_any_split_gives_the_same_result_as_the_whole_text(
    stops: list[str], split: tuple[str, list[str]]
) -> None:
    text, pieces = split
    assert "".join(pieces) == text
    assert run(stops, pieces) == run(stops, [text]) == reference(stops, text)
