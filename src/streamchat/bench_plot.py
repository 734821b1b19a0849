"""The bench picture: TTFT streaming vs non-streaming, and when each token of a median run arrived.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend, no display),
so it works headless and from any thread.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import wrap

from ._extras import require
from .bench import BenchResult, Mode

PLOT_SIZE_PX = (1200, 500)
PLOT_DPI = 100
COLORS: dict[Mode, str] = {"stream": "#2a7ab9", "non-stream": "#c8553d"}
LABELS: dict[Mode, str] = {"stream": "streaming", "non-stream": "non-streaming"}


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def plot(result: BenchResult, path: str | Path) -> Path:
    """Write a PNG of ``PLOT_SIZE_PX`` pixels to ``path``; returns the path."""
    require("bench", "the bench plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = PLOT_SIZE_PX
    figure = Figure(figsize=(width / PLOT_DPI, height / PLOT_DPI), dpi=PLOT_DPI)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    target = result.target
    prompt = ", ".join(map(str, result.prompt_tokens())) or "?"
    model = target["model"] if len(target["model"]) <= 70 else target["model"][:69] + "…"
    title = (
        f"{model} — {target['where']} — prompt {prompt} tokens, "
        f"max_tokens {result.config.request.max_tokens}"
    )
    figure.suptitle("\n".join(wrap(title, 150)), fontsize=10)

    # Left: median TTFT per mode and level, every run as a dot.
    levels = list(result.config.concurrency)
    modes = list(result.config.modes)
    width_bar = 0.8 / len(modes)
    highest = 0.0
    for i, mode in enumerate(modes):
        for j, level in enumerate(levels):
            values = [s.ttft_s for s in result.measured(mode, level) if s.ttft_s is not None]
            if not values:
                continue
            x = j + (i - (len(modes) - 1) / 2) * width_bar
            middle = sorted(values)[(len(values) - 1) // 2]
            highest = max(highest, *values)
            left.bar(x, middle, width_bar * 0.9, color=COLORS[mode], alpha=0.75,
                     label=LABELS[mode] if j == 0 else None)  # fmt: skip
            left.scatter([x] * len(values), values, s=12, color="black", zorder=3)
            left.annotate(_seconds(middle), (x, middle), ha="center", va="bottom", fontsize=8,
                          xytext=(0, 3), textcoords="offset points")  # fmt: skip
    left.set_xticks(range(len(levels)), [f"{c} concurrent" for c in levels])
    left.set_ylabel("time to first token (s)")
    left.set_title("Time to first token (bars: median; dots: runs)", fontsize=10)
    left.set_ylim(0, highest * 1.25 or 1)  # room for the labels and the legend
    left.legend(fontsize=8, loc="upper left")

    # Right: the token arrival timeline of the median streaming run.
    sample = result.median_stream_sample()
    if sample is not None and sample.delta_offsets_s:
        offsets = sample.delta_offsets_s
        right.step([0.0, *offsets], range(len(offsets) + 1), where="post", color=COLORS["stream"],
                   label=f"streaming: text deltas as they arrive ({len(offsets)})")  # fmt: skip
        right.axvline(offsets[0], color=COLORS["stream"], linestyle=":", linewidth=1)
        right.annotate(f"first token {_seconds(offsets[0])}", (offsets[0], len(offsets) * 0.9),
                       xytext=(4, 0), textcoords="offset points", fontsize=8)  # fmt: skip
        whole = [s.total_s for s in result.measured("non-stream", sample.concurrency)]
        whole = [t for t in whole if t is not None]
        if whole:
            at = sorted(whole)[(len(whole) - 1) // 2]
            label = f"non-streaming: all text at once, median {_seconds(at)}"
            right.scatter([at], [len(offsets)], color=COLORS["non-stream"], zorder=3, label=label)
            right.axvline(at, color=COLORS["non-stream"], linestyle=":", linewidth=1)
        right.set_title(
            f"Token arrival, median streaming run ({sample.output_tokens} tokens in "
            f"{_seconds(sample.total_s or 0.0)})",
            fontsize=10,
        )
        right.legend(fontsize=8, loc="lower right")
    else:
        right.set_title("Token arrival: no successful streaming run", fontsize=10)
    right.set_xlabel("seconds since the request")
    right.set_ylabel("text deltas received")
    right.set_xlim(left=0)
    right.set_ylim(bottom=0)

    figure.tight_layout()
    target_path = Path(path)
    target_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target_path, format="png", dpi=PLOT_DPI)
    return target_path
