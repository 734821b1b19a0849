"""Make ``docs/img/terminal.svg``: what ``streamchat chat`` shows for a real reply of the
embedded model (SmolLM2), rendered by the chat's own streamed Markdown renderer and exported by
rich (``Console(record=True).save_svg``).

The reply is streamed token by token from the model into :class:`MarkdownStream`, exactly as
the chat does; the screenshot holds the lines it finished with (what the terminal shows once the
reply is done), between the chat's own welcome, prompt and stats lines.

    python benchmarks/_terminal_svg.py [--out docs/img/terminal.svg]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from rich.console import Console
from rich.segment import Segment
from rich.text import Text

from streamchat import Client
from streamchat.cli.markdown import MarkdownStream
from streamchat.cli.options import model_label

ROOT = Path(__file__).resolve().parent.parent
PROMPT = (
    "Write a Python function that checks whether a number is prime, then explain how it works "
    "in a short bullet list."
)
WIDTH = 96


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "terminal.svg")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()

    screen = Console(
        record=True,
        width=WIDTH,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        highlight=False,
    )
    renderer = MarkdownStream(screen, keep_lines=True)
    client = Client()
    with client.messages.stream(
        model=args.model,
        max_tokens=400,
        temperature=0.6,
        seed=args.seed,
        messages=[{"role": "user", "content": PROMPT}],
    ) as stream:
        for text in stream.text_stream:
            renderer.feed(text)
        metrics = stream.metrics
    renderer.close()

    screen.print(f"Welcome to streamchat! Chatting with {model_label(args.model)}.", style="bold")
    screen.print(
        "Type 'quit' or press Ctrl-D to leave; Ctrl-C stops a reply; /help lists commands.",
        style="dim",
    )
    screen.print(Text.assemble(("You:", "bold bright_blue"), " ", PROMPT))
    screen.print("Assistant:", style="bold green")
    for line in renderer.lines or []:
        screen.print(Segments([*line, Segment.line()]), crop=False, soft_wrap=True)
    screen.print(metrics.summary(), style="dim")
    screen.print(Text.assemble(("You:", "bold bright_blue"), " "))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    screen.save_svg(str(args.out), title="streamchat chat")
    print(f"wrote {args.out}")
    return 0


class Segments:
    """A finished line's segments, printed as they are."""

    def __init__(self, segments: list[Segment]) -> None:
        self.segments = segments

    def __rich_console__(self, console: Console, options: object) -> list[Segment]:
        return self.segments


if __name__ == "__main__":
    sys.exit(main())
