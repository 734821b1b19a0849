"""The terminal's streamed Markdown: CPU per token at 100, 1k, 4k, 10k and 20k tokens of mixed
Markdown, streamchat's :class:`~streamchat.cli.markdown.MarkdownStream` against the naive way,
``rich.live.Live`` showing ``rich.markdown.Markdown`` of the whole reply so far, re-rendered at
every token.

Both draw on a rich ``Console`` (100 x 40, truecolor) writing to memory, so the cost measured is
parsing, rendering and escape codes, not a terminal's. The reply is mixed Markdown as a chat
model writes it (headings, paragraphs that wrap, bold/italic/code/links, nested and numbered
lists, quotes, fenced Python, tables, rules), cut into tokens of 1-6 characters with their
leading space.

- streamchat: ms per token averaged over the tokens since the previous size (its work comes in
  bursts when a line or a block completes; the average over a window is what a reply costs),
  and the slowest single token in that window;
- naive: ms for one more token when the reply already has N tokens (median of a few), since
  re-rendering 20k tokens at every token would take an hour.

Target: streamchat <= 0.5 ms/token at every size, flat. ``--quick``: sizes up to 4k.
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_json

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


def measure_streamchat(tokens: list[str], sizes: list[int]) -> list[dict[str, float]]:
    from streamchat.cli.markdown import MarkdownStream

    target = console()
    stream = MarkdownStream(target, height=HEIGHT)
    rows, start, clock = [], 0, time.perf_counter
    for size in sizes:
        worst, began = 0.0, clock()
        for token in tokens[start:size]:
            t0 = clock()
            target.file.write(stream.feed(token))
            worst = max(worst, clock() - t0)
        spent = clock() - began
        rows.append(
            {
                "tokens": size,
                "ms_per_token": spent * 1000 / (size - start),
                "max_token_ms": worst * 1000,
            }
        )
        start = size
    target.file.write(stream.close())
    return rows


def measure_naive(tokens: list[str], sizes: list[int], samples: int) -> list[dict[str, float]]:
    from rich.live import Live
    from rich.markdown import Markdown

    rows = []
    for size in sizes:
        target = console()
        text = "".join(tokens[: size - samples])
        times = []
        with Live(console=target, auto_refresh=False, vertical_overflow="visible") as live:
            live.update(Markdown(text), refresh=True)
            for token in tokens[size - samples : size]:
                text += token
                t0 = time.perf_counter()
                live.update(Markdown(text), refresh=True)
                times.append(time.perf_counter() - t0)
        rows.append({"tokens": size, "ms_per_token": statistics.median(times) * 1000})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 4k tokens")
    parser.add_argument("--out", help="write the JSON here instead of results/markdown.json")
    args = parser.parse_args()
    sizes = [s for s in SIZES if not args.quick or s <= 4_000]
    tokens = reply_tokens(max(sizes))
    measure_streamchat(reply_tokens(2_000), [2_000])  # warm up: imports, lexers, caches
    ours = measure_streamchat(tokens, sizes)
    naive = measure_naive(tokens, sizes, samples=5 if args.quick else 3)
    comparisons = []
    for mine, theirs in zip(ours, naive, strict=True):
        comparisons.append(
            {
                "metric": f"CPU per token (ms) at {mine['tokens']:,} tokens",
                "unit": "ms",
                "baseline": "rich.live + Markdown re-render",
                "baseline_value": theirs["ms_per_token"],
                "streamchat": "MarkdownStream",
                "streamchat_value": mine["ms_per_token"],
                "ratio": mine["ms_per_token"] / theirs["ms_per_token"],
                "better": "lower",
                "target_value": TARGET_MS,
            }
        )
        print(
            f"{mine['tokens']:>6} tokens: streamchat {mine['ms_per_token']:.3f} ms/token "
            f"(slowest token {mine['max_token_ms']:.2f} ms) · naive "
            f"{theirs['ms_per_token']:.1f} ms/token"
        )
    path = write_json(
        "markdown",
        {
            "quick": args.quick,
            "width": WIDTH,
            "height": HEIGHT,
            "target_ms_per_token": TARGET_MS,
            "streamchat": ours,
            "naive": naive,
            "comparisons": comparisons,
        },
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
