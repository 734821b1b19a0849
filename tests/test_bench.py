"""``streamchat bench`` measures what the scripted provider was told to do, in every mode.

The scripted provider waits ``first_delay`` before its first token and ``delay`` between tokens,
so the right answers are known: these tests check the measurement, never the speed.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import matplotlib.image
import pytest

from serving import Server, serve
from streamchat.bench import (
    NOTEBOOK_MAX_TOKENS,
    NOTEBOOK_MODEL_ID,
    NOTEBOOK_PROMPT,
    SAMPLE_KEYS,
    BenchConfig,
    BenchRequest,
    BenchResult,
    LibraryTarget,
    Measurement,
    Mode,
    run_bench,
)
from streamchat.bench_plot import COLORS, PLOT_SIZE_PX
from streamchat.bench_targets import endpoint_target
from streamchat.cli.main import main
from streamchat.providers.scripted import tokenize

FIRST_DELAY, DELAY = 0.2, 0.03
WORDS = [f"w{i}" for i in range(8)]
TEXT = " ".join(WORDS)
SPEC = "scripted?" + urlencode({"delay": DELAY, "first_delay": FIRST_DELAY, "text": TEXT})
EARLY = 0.003  # timers may fire a hair early; a measurement may not be earlier than this
PROMPT_TOKENS = len(tokenize(NOTEBOOK_PROMPT))  # what the scripted provider counts
STOP = {"anthropic": "end_turn", "openai": "stop", "bedrock": "end_turn"}


def check_timings(result: BenchResult, *, every_gap: bool = True) -> None:
    """Streaming TTFT ≈ first_delay, gaps ≈ delay, non-streaming TTFT = whole reply.

    Only lower bounds on times: the provider's sleeps guarantee them, while a loaded machine
    can only make a measurement later. Over a network one late frame makes the next gap short,
    so only the library (timed at generation) bounds ``every_gap``; endpoints are checked side
    by side instead: a stream's first token is measured before a whole reply of the same run.
    """
    streams, wholes = result.measured("stream"), result.measured("non-stream")
    assert streams and wholes
    for sample in streams:
        assert sample.output_tokens == len(WORDS)
        assert len(sample.delta_offsets_s) == len(WORDS)
        assert sample.delta_offsets_s == sorted(sample.delta_offsets_s)
        assert sample.ttft_s == sample.delta_offsets_s[0]
        assert sample.ttft_s >= FIRST_DELAY - EARLY
        span = sample.delta_offsets_s[-1] - sample.delta_offsets_s[0]
        assert sample.decode_tokens_per_s == pytest.approx((len(WORDS) - 1) / span)
        if every_gap:  # over a network a late first frame shortens the span
            assert span >= (len(WORDS) - 1) * DELAY - EARLY
            assert min(sample.gaps()) >= DELAY - EARLY
        assert sample.total_s >= sample.delta_offsets_s[-1]
    whole_reply = FIRST_DELAY + (len(WORDS) - 1) * DELAY
    for sample in wholes:
        assert sample.ttft_s == sample.total_s >= whole_reply - EARLY
        assert sample.output_tokens == len(WORDS)
        assert sample.delta_offsets_s == [] and sample.decode_tokens_per_s is None
    ttft = statistics.median(s.ttft_s for s in streams)
    assert ttft < statistics.median(s.ttft_s for s in wholes)  # 0.2 s vs 0.41 s of sleeps
    assert {s.input_tokens for s in streams + wholes} == {PROMPT_TOKENS}


@pytest.mark.anyio
async def test_library_bench_measures_first_token_delay_and_gaps(
    scripted: Callable[..., Any],
) -> None:
    scripted(delay=DELAY, first_delay=FIRST_DELAY, text=TEXT)
    config = BenchConfig(runs=3, warmup=1)
    seen = []
    result = await run_bench(LibraryTarget(SPEC), config, seen.append)
    check_timings(result)
    assert len(seen) == len(result.samples) == config.total_requests() == 8
    assert result.target["kind"] == "library" and result.target["provider"] == "scripted"
    assert all(s.stop_reason == "end_turn" and s.error is None for s in result.samples)


class CountingTarget:
    """Answers after a short sleep and records how many requests were in flight at once."""

    def __init__(self) -> None:
        self.in_flight = self.peak = 0

    def describe(self) -> dict[str, Any]:
        return {"kind": "test", "model": "counting", "where": "here", "timing": "sleep"}

    async def measure(self, mode: Mode, request: BenchRequest) -> Measurement:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.02)
        self.in_flight -= 1
        return Measurement(0.02, 1, 2, [0.01, 0.02] if mode == "stream" else [], "end_turn")

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_each_level_sends_that_many_requests_at_once() -> None:
    target = CountingTarget()
    config = BenchConfig(runs=2, warmup=1, concurrency=(3, 5), modes=("stream",))
    result = await run_bench(target, config)
    assert target.peak == 5
    five = result.measured("stream", 5)
    assert sorted((s.run, s.slot) for s in five) == [(r, s) for r in (0, 1) for s in range(5)]
    assert [(g["concurrency"], g["requests"]) for g in result.summary()] == [(3, 6), (5, 10)]
    assert [(r["concurrency"], r["output_tokens"]) for r in result.rounds] == [
        (3, 6), (3, 6), (5, 10), (5, 10)
    ]  # fmt: skip


@pytest.mark.anyio
async def test_failed_requests_are_recorded_not_fatal(scripted: Callable[..., Any]) -> None:
    spec, _ = scripted(error_before="overloaded_error")
    result = await run_bench(LibraryTarget(spec), BenchConfig(runs=2, warmup=0))
    assert len(result.samples) == 4 and result.measured() == []
    assert all(s.error.startswith("OverloadedError") and s.ttft_s is None for s in result.samples)
    assert [g["errors"] for g in result.summary()] == [2, 2]


# -- the command: table, JSON, plot -------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One ``streamchat bench`` run with --json and --plot, shared by the tests that read them."""
    folder = tmp_path_factory.mktemp("bench")
    spec = "scripted?" + urlencode({"delay": 0.01, "first_delay": 0.05, "text": TEXT})
    paths = {"json": folder / "out" / "bench.json", "plot": folder / "bench.png"}
    argv = ["bench", "-m", spec, "--runs", "2", "--warmup", "1", "--concurrency", "1,2"]
    argv += ["--json", str(paths["json"]), "--plot", str(paths["plot"])]
    with pytest.MonkeyPatch.context() as patch:
        import streamchat.providers

        patch.setattr(streamchat.providers, "_cache", {})
        code = main(argv)
    yield {"code": code, "spec": spec, **paths}


def test_command_prints_a_table_of_what_was_measured(
    capsys: pytest.CaptureFixture[str],
    scripted: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # one line per row, whatever the terminal
    spec, _ = scripted(delay=0.01, first_delay=0.05, text="a b c")
    assert main(["bench", "-m", spec, "--runs", "2", "--warmup", "0"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for words in ("TTFT (ms)", "total time (s)", "output tokens", "decode tokens/s",
                  "inter-token gap (ms)", "median", "p90", "min", "max", "streaming",
                  "non-streaming", f"prompt {PROMPT_TOKENS} tokens", "max_tokens 500",
                  "temperature 0", "2 runs per mode"):  # fmt: skip
        assert words in out
    assert "scripted, in this process" in out


def test_json_holds_every_raw_sample_with_documented_keys(cli_run: dict[str, Any]) -> None:
    assert cli_run["code"] == 0
    data = json.loads(cli_run["json"].read_text())
    assert data["schema"] == "streamchat.bench/1"
    assert data["sample_keys"] == SAMPLE_KEYS
    assert data["request"] == {
        "prompt": NOTEBOOK_PROMPT,
        "max_tokens": NOTEBOOK_MAX_TOKENS,
        "temperature": 0.0,
        "prompt_tokens": [PROMPT_TOKENS],
    }
    assert data["target"]["model"] == cli_run["spec"] and data["target"]["kind"] == "library"
    assert data["runs"] == 2 and data["warmup"] == 1 and data["concurrency"] == [1, 2]
    samples = data["samples"]
    # 2 modes x (1 warm-up + 2 runs x (1 + 2 concurrent))
    assert len(samples) == 14
    assert all(set(s) == set(SAMPLE_KEYS) for s in samples)
    assert sum(s["warmup"] for s in samples) == 2
    keys = {(s["mode"], s["concurrency"], s["run"], s["slot"]) for s in samples if not s["warmup"]}
    assert len(keys) == 12
    for sample in samples:
        offsets = sample["delta_offsets_s"]
        if sample["mode"] == "stream":
            assert len(offsets) == sample["output_tokens"] == len(WORDS)
            assert offsets == sorted(offsets) and sample["ttft_s"] == offsets[0]
        else:
            assert offsets == [] and sample["ttft_s"] == sample["total_s"]
    assert {(g["mode"], g["concurrency"]) for g in data["summary"]} == {
        (m, c) for m in ("stream", "non-stream") for c in (1, 2)
    }
    assert len(data["rounds"]) == 8 and data["machine"]["cores"]


def test_plot_is_a_png_of_the_expected_size_showing_both_modes(cli_run: dict[str, Any]) -> None:
    png = cli_run["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == PLOT_SIZE_PX
    pixels = matplotlib.image.imread(cli_run["plot"])
    assert pixels.shape[:2] == (PLOT_SIZE_PX[1], PLOT_SIZE_PX[0])
    rgb = (pixels[..., :3] * 255).round().astype(int)
    for color in COLORS.values():  # both modes' bars (blended 75% over white) are drawn
        want = [round(255 - 0.75 * (255 - int(color[i : i + 2], 16))) for i in (1, 3, 5)]
        close = (abs(rgb - want) <= 2).all(axis=-1)
        assert close.sum() > 1000, color


def test_endpoint_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--base-url", "http://127.0.0.1:9"]) == 1
    assert "--protocol" in capsys.readouterr().err
    assert main(["bench", "--protocol", "openai"]) == 1
    assert "--base-url" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--concurrency", "1,0"])


# -- endpoints, through each protocol's official SDK ----------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve("--model", SPEC, "--api-key", "bench-key") as running:
        yield running


@pytest.fixture(autouse=True)
def _aws_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", ["anthropic", "openai", "bedrock"])
async def test_endpoint_bench_measures_a_real_server(server: Server, protocol: str) -> None:
    target = endpoint_target(protocol, server.url, NOTEBOOK_MODEL_ID, "bench-key", workers=2)
    config = BenchConfig(runs=2, warmup=0, concurrency=(1, 2))
    result = await run_bench(target, config)
    await target.aclose()
    assert [s.error for s in result.samples if s.error] == []
    check_timings(result, every_gap=False)
    assert {s.stop_reason for s in result.samples} == {STOP[protocol]}
    assert result.target["protocol"] == protocol and result.target["kind"] == "endpoint"
    assert len(result.measured(concurrency=2)) == 8


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", ["anthropic", "openai", "bedrock"])
async def test_a_refused_endpoint_request_is_a_failed_sample(server: Server, protocol: str) -> None:
    target = endpoint_target(protocol, server.url, NOTEBOOK_MODEL_ID, "wrong-key")
    result = await run_bench(target, BenchConfig(runs=1, warmup=0, modes=("stream",)))
    await target.aclose()
    [sample] = result.samples
    assert sample.error is not None and sample.ttft_s is None


def test_command_benchmarks_an_endpoint(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "endpoint.json"
    argv = ["bench", "--base-url", server.url, "--protocol", "openai", "--api-key", "bench-key"]
    assert main([*argv, "--runs", "1", "--warmup", "0", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["target"]["endpoint"] == server.url + "/v1"
    assert data["target"]["model"] == NOTEBOOK_MODEL_ID
    assert data["target"]["client"].startswith("openai ")
    assert all(s["output_tokens"] == len(WORDS) for s in data["samples"])
    assert f"{server.url}/v1 (openai protocol" in " ".join(capsys.readouterr().out.split())
