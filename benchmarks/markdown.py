"""The terminal's streamed Markdown: wall time per token at 100, 1k, 4k, 10k and 20k tokens of
mixed Markdown, streamchat's :class:`~streamchat.cli.markdown.MarkdownStream` against the naive
way, ``rich.live.Live`` showing ``rich.markdown.Markdown`` of the whole reply so far, re-rendered
at every token.

Both draw on a rich ``Console`` (100 x 40, truecolor) writing to memory, so the cost measured is
parsing, rendering and escape codes, not a terminal's. The reply is mixed Markdown as a chat
model writes it (headings, paragraphs that wrap, bold/italic/code/links, nested and numbered
lists, quotes, fenced Python, tables, rules), cut into tokens of 1-6 characters with their
leading space.

Like with like: at each size N both sides are timed over the same window, the :data:`WINDOW`
tokens that bring the reply from N - WINDOW to N tokens (streamchat having been fed every token
before; the naive side having rendered the first N - WINDOW), each token timed alone with
``time.perf_counter`` (wall time; the benchmark is one single-threaded process). Per size and
side: the mean wall time per token over the window, and the slowest single token in it (a
stall the reader sees). Repeats alternate the sides (:data:`REPEATS`, ``--quick`` fewer sizes),
reported as median [min–max] over the repeats.

Target: streamchat <= 0.5 ms per token at every size, flat.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import compare, rotation, spread, write_result

RESULT_KEYS = ("quick", "width", "height", "window", "repeats", "target_ms_per_token",
               "samples", "comparisons", "tables")  # fmt: skip
PACKAGES = ("rich", "markdown-it-py", "pygments")
WINDOW = 50
REPEATS = 3
SIZES = (100, 1_000, 4_000, 10_000, 20_000)
TARGET_MS = 0.5
WIDTH, HEIGHT = 100, 40

SECTION = (
    "## Section {n}: what to know\n\n"
    "Streaming a reply means the **first words** arrive at once, and the *rest* follows token "
    "by token; a terminal has to keep up with `every token` without redrawing what it "
    "showed. See [the guide](https://example.com/guide/{n}) for details.\n\n"
    "- a first point, with **bold** words\n"
    "  - a nested point that goes on for long enough to wrap around at the terminal's width\n"
    "- a second point\n\n"
    "1. install it\n2. run it\n3. read the output\n\n"
    "> A quote, because models like them: simple is better than complex.\n\n"
    "```python\n"
    "def fib(n: int) -> int:\n"
    '    """The n-th Fibonacci number."""\n'
    "    a, b = 0, 1\n"
    "    for _ in range(n):  # iterate\n"
    "        a, b = b, a + b\n"
    "    return a\n"
    "```\n\n"
    "| language | typing | speed |\n"
    "|----------|:------:|------:|\n"
    "| Python | dynamic | {n} |\n"
    "| Rust | static | 10 |\n\n"
    "---\n\n"
)


def reply_tokens(count: int) -> list[str]:
    """``count`` tokens of mixed Markdown."""
    text, n = "", 0
    pattern = re.compile(r"\s*[^\s]{1,6}|\s+")
    pieces: list[str] = []
    while len(pieces) < count:
        text = SECTION.format(n=n)
        pieces += pattern.findall(text)
        n += 1
    return pieces[:count]


def console() -> Any:
    from rich.console import Console

    return Console(
        file=io.StringIO(),
        width=WIDTH,
        height=HEIGHT,
        force_terminal=True,
        color_system="truecolor",
    )


def timed(feed: Any, tokens: list[str]) -> list[float]:
    """Wall seconds of ``feed(token)`` for each token."""
    times = []
    for token in tokens:
        t0 = time.perf_counter()
        feed(token)
        times.append(time.perf_counter() - t0)
    return times


def measure_streamchat(tokens: list[str], sizes: list[int]) -> list[list[float]]:
    """One reply streamed through MarkdownStream; each size's window timed token by token."""
    from streamchat.cli.markdown import MarkdownStream

    target = console()
    stream = MarkdownStream(target, height=HEIGHT)
    feed = lambda token: target.file.write(stream.feed(token))  # noqa: E731
    windows, done = [], 0
    for size in sizes:
        for token in tokens[done : size - WINDOW]:  # untimed: the reply up to the window
            feed(token)
        windows.append(timed(feed, tokens[size - WINDOW : size]))
        done = size
    target.file.write(stream.close())
    return windows


def measure_naive(tokens: list[str], sizes: list[int]) -> list[list[float]]:
    """For each size, a Live showing the first N - WINDOW tokens, then the window re-rendered
    at every token."""
    from rich.live import Live
    from rich.markdown import Markdown

    windows = []
    for size in sizes:
        target = console()
        text = "".join(tokens[: size - WINDOW])
        with Live(console=target, auto_refresh=False, vertical_overflow="visible") as live:
            live.update(Markdown(text), refresh=True)

            def feed(token: str) -> None:
                nonlocal text
                text += token
                live.update(Markdown(text), refresh=True)

            windows.append(timed(feed, tokens[size - WINDOW : size]))
    return windows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 4k tokens")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--out", help="write the JSON here instead of results/markdown.json")
    args = parser.parse_args()
    sizes = [s for s in SIZES if not args.quick or s <= 4_000]
    tokens = reply_tokens(max(sizes))
    measure_streamchat(reply_tokens(2_000), [2_000])  # warm up: imports, lexers, caches
    sides = {"streamchat": measure_streamchat, "naive": measure_naive}
    samples: dict[str, list[list[list[float]]]] = {name: [] for name in sides}
    for i in range(args.repeats):
        for name in rotation(list(sides), i):
            samples[name].append(sides[name](tokens, sizes))
        print(f"repeat {i + 1}/{args.repeats} done", file=sys.stderr)
    comparisons, rows = [], []
    for k, size in enumerate(sizes):
        mean = {n: [sum(r[k]) / len(r[k]) * 1000 for r in samples[n]] for n in sides}
        worst = {n: [max(r[k]) * 1000 for r in samples[n]] for n in sides}
        where = f"at {size:,} tokens (the {WINDOW} tokens before)"
        comparisons.append(compare(
            f"wall time per token {where}", "ms wall", "rich.live + Markdown re-render",
            mean["naive"], "MarkdownStream", mean["streamchat"], "lower",
            target_value=TARGET_MS))  # fmt: skip
        comparisons.append(compare(
            f"slowest single token {where}", "ms wall", "rich.live + Markdown re-render",
            worst["naive"], "MarkdownStream", worst["streamchat"], "lower"))  # fmt: skip
        ours, theirs = spread(mean["streamchat"]), spread(mean["naive"])
        rows.append([f"{size:,}", f"{ours['median']:.3f}", f"{max(worst['streamchat']):.2f}",
                     f"{theirs['median']:.1f}", f"{max(worst['naive']):.1f}"])  # fmt: skip
        print(
            f"{size:>6} tokens: streamchat {ours['median']:.3f} ms/token (slowest "
            f"{max(worst['streamchat']):.2f} ms) · naive {theirs['median']:.1f} ms/token"
        )
    tables = [{
        "title": f"Per size: mean wall ms per token over the window (median of {args.repeats} "
                 "repeats) and the slowest single token of any repeat",
        "columns": ["tokens", "streamchat ms/token", "streamchat slowest token (ms)",
                    "naive ms/token", "naive slowest token (ms)"],
        "rows": rows,
    }]  # fmt: skip
    data = {
        "quick": args.quick,
        "width": WIDTH,
        "height": HEIGHT,
        "window": WINDOW,
        "repeats": args.repeats,
        "target_ms_per_token": TARGET_MS,
        "samples": {"sizes": sizes, **samples},
        "comparisons": comparisons,
        "tables": tables,
    }
    path = write_result("markdown", data, keys=RESULT_KEYS, packages=PACKAGES, path=args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
