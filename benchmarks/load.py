"""1,000 concurrent streams through one ``streamchat serve``: nothing lost, duplicated, reordered
or crossed, and how much later than the script each token arrives.

The server (a subprocess) runs the scripted provider with a per-token delay; it echoes each
prompt, and every prompt is unique (``s<stream>.<word>``), so each stream's text is known and is
checked byte for byte, along with its exact event sequence and a message id no other stream has.
The client is one asyncio process kept deliberately light while streams run: a raw
``asyncio.Protocol`` per connection that only timestamps and keeps what it reads; HTTP (h11)
and the protocol (streamchat's own SSE / eventstream decoders) are parsed after the wave, so
the client's own CPU time is measured and reported apart.

Extra gap = inter-token gap seen by the client - the configured delay. Target on 2 cores: all
streams complete and correct, p99 extra gap <= 100 ms. Server RSS (VmRSS) and CPU (utime+stime)
come from /proc/<pid>/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

import h11
from rich.console import Console
from rich.table import Table

from _common import machine, median, percentile, write_json
from protocols import PROTOCOLS, Protocol
from serving import serve
from streamchat.cli.serve import raise_open_files_limit

HOST = "127.0.0.1"
TARGET_P99_EXTRA_MS = 100.0
WAVES = ("anthropic", "openai", "bedrock", "invoke", "mixed")
PREFIX = "[turn 1] You said: "  # the scripted provider's echo; 4 word tokens
PREFIX_TOKENS = 4


# -- one stream ----------------------------------------------------------------------------------
class _Collector(asyncio.Protocol):
    """Keeps ``(arrival time, bytes)`` of every read; nothing else while the wave runs."""

    def __init__(self, closed: asyncio.Future[None]) -> None:
        self.reads: list[tuple[float, bytes]] = []
        self.closed = closed

    def data_received(self, data: bytes) -> None:
        self.reads.append((time.perf_counter(), data))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class Raw:
    """One stream as the wire delivered it."""

    protocol: Protocol
    index: int
    prompt: str
    started: float = 0.0
    reads: list[tuple[float, bytes]] = field(default_factory=list)
    failure: str | None = None  # connect error or timeout


def prompt_for(index: int, tokens: int) -> str:
    """Words that exist in no other stream, and say where they belong."""
    return " ".join(f"s{index}.{j}" for j in range(tokens - PREFIX_TOKENS))


def request_bytes(protocol: Protocol, prompt: str, tokens: int, port: int) -> bytes:
    body = json.dumps(protocol.body(prompt, tokens + 8)).encode()
    head = (
        f"POST {protocol.stream_path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


async def run_stream(raw: Raw, tokens: int, port: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    raw.started = time.perf_counter()
    try:
        transport, collector = await asyncio.wait_for(
            loop.create_connection(lambda: _Collector(closed), HOST, port), timeout
        )
    except (OSError, TimeoutError) as error:
        raw.failure = f"connect: {type(error).__name__}: {error}"
        return
    transport.write(request_bytes(raw.protocol, raw.prompt, tokens, port))
    try:
        await asyncio.wait_for(closed, timeout)
    except TimeoutError:
        raw.failure = f"timeout after {timeout:.0f}s"
        transport.abort()
    raw.reads = collector.reads


# -- checking it ---------------------------------------------------------------------------------
def expected_kinds(protocol: Protocol, tokens: int) -> list[str]:
    """The exact event sequence of a correct stream of ``tokens`` text deltas."""
    if protocol.name == "openai":
        return ["chunk"] * (tokens + 2) + ["[DONE]"]
    if protocol.name == "bedrock":
        return ["messageStart", *["contentBlockDelta"] * tokens, "contentBlockStop",
                "messageStop", "metadata"]  # fmt: skip
    return ["message_start", "content_block_start", *["content_block_delta"] * tokens,
            "content_block_stop", "message_delta", "message_stop"]  # fmt: skip


@dataclass
class Checked:
    """One stream's verdict and timings."""

    verdict: str  # ok | lost | duplicated | reordered | crossed | error | incomplete | failed
    ids: set[str]
    ttft: float | None
    gaps: list[float]  # between consecutive text deltas, seconds
    detail: str = ""


def classify(text: str, expected: str, index: int) -> str:
    """What went wrong with a stream whose text is not the expected text."""
    got, want = text.split(), expected.split()
    own = f"s{index}."
    if any(w.startswith("s") and "." in w and not w.startswith(own) for w in got[4:]):
        return "crossed"
    if len(got) > len(want):
        return "duplicated"
    if len(got) < len(want):
        return "lost"
    return "reordered" if sorted(got) == sorted(want) else "crossed"


def check(raw: Raw, tokens: int) -> Checked:
    """Parse HTTP (h11) then the protocol; compare against what the script must produce."""
    if raw.failure:
        return Checked("failed", set(), None, [], raw.failure)
    http = h11.Connection(h11.CLIENT)
    headers = [("Host", HOST), ("Content-Length", "0")]
    http.send(h11.Request(method="POST", target="/", headers=headers))
    http.send(h11.EndOfMessage())
    reader = raw.protocol.reader()
    status, complete, times = 0, False, []
    for arrived, data in raw.reads:
        http.receive_data(data)
        while not complete:
            event = http.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                times += [arrived] * reader.feed(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                complete = True
    gaps = [b - a for a, b in itertools.pairwise(times)]
    ttft = times[0] - raw.started if times else None
    expected = PREFIX + raw.prompt
    if status != 200 or reader.error:
        return Checked("error", reader.ids, ttft, gaps, f"status {status} {reader.error}")
    if not complete or not reader.done:
        return Checked("incomplete", reader.ids, ttft, gaps, f"{len(times)} deltas")
    if reader.text.encode() != expected.encode():
        return Checked(classify(reader.text, expected, raw.index), reader.ids, ttft, gaps)
    kinds = expected_kinds(raw.protocol, tokens)
    if reader.kinds != kinds:
        verdict = "duplicated" if len(reader.kinds) > len(kinds) else "lost"
        if len(reader.kinds) == len(kinds):
            verdict = "reordered"
        return Checked(verdict, reader.ids, ttft, gaps, f"events {reader.kinds}")
    if len(reader.ids) != (0 if raw.protocol.name == "bedrock" else 1):  # Converse has no ids
        return Checked("crossed", reader.ids, ttft, gaps, f"message ids {reader.ids}")
    return Checked("ok", reader.ids, ttft, gaps)


# -- the server ----------------------------------------------------------------------------------
def server_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sample_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], server_rss_mb(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


# -- a wave --------------------------------------------------------------------------------------
@dataclass
class Wave:
    name: str
    streams: int
    verdicts: Counter[str]
    problems: list[str]
    tokens: int
    ttft: list[float]
    gaps: list[float]
    duplicate_ids: int
    peak_concurrent: int
    seconds: float
    client_cpu: float  # seconds of this process's CPU while the streams ran
    check_cpu: float  # seconds spent parsing and checking afterwards
    server_cpu: float
    rss_before: float
    rss_after: float
    rss_peak: float
    loadavg: float  # the machine's 1-minute load average after the wave (others' work too)

    @property
    def correct(self) -> bool:
        return self.verdicts["ok"] == self.streams and self.duplicate_ids == 0


def peak_overlap(raws: list[Raw]) -> int:
    """Most streams open at once, from each one's start and last read."""
    edges = []
    for raw in raws:
        if raw.reads:
            edges += [(raw.started, 1), (raw.reads[-1][0], -1)]
    level = peak = 0
    for _, step in sorted(edges):
        level += step
        peak = max(peak, level)
    return peak


async def run_wave(
    name: str, port: int, pid: int, *, streams: int, tokens: int, delay: float
) -> Wave:
    """``streams`` concurrent streams of ``tokens`` tokens each; ``name`` is a protocol or
    ``mixed`` (all four, round robin)."""
    names = list(PROTOCOLS) if name == "mixed" else [name]
    raws = [Raw(PROTOCOLS[names[i % len(names)]], i, prompt_for(i, tokens)) for i in range(streams)]
    timeout = 30 + tokens * delay * 4
    peak = [server_rss_mb(pid)]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, peak, stop))
    rss_before, cpu_before = peak[0], server_cpu_seconds(pid)
    gc.collect()
    gc.disable()  # a full collection over a thousand streams' reads would pause this client
    try:
        started, client_before = time.perf_counter(), time.process_time()
        await asyncio.gather(*(run_stream(raw, tokens, port, timeout) for raw in raws))
        seconds, client_cpu = time.perf_counter() - started, time.process_time() - client_before
    finally:
        gc.enable()
    server_cpu = server_cpu_seconds(pid) - cpu_before
    stop.set()
    await sampler
    check_before = time.process_time()
    results = [check(raw, tokens) for raw in raws]
    check_cpu = time.process_time() - check_before
    ids = Counter(i for result in results for i in result.ids)
    problems = [
        f"stream {raw.index} ({raw.protocol.name}): {result.verdict} {result.detail}"
        for raw, result in zip(raws, results, strict=True)
        if result.verdict != "ok"
    ]
    return Wave(
        name=name,
        streams=streams,
        verdicts=Counter(result.verdict for result in results),
        problems=problems,
        tokens=tokens,
        ttft=[r.ttft for r in results if r.ttft is not None],
        gaps=[gap for r in results for gap in r.gaps],
        duplicate_ids=sum(count - 1 for count in ids.values()),
        peak_concurrent=peak_overlap(raws),
        seconds=seconds,
        client_cpu=client_cpu,
        check_cpu=check_cpu,
        server_cpu=server_cpu,
        rss_before=rss_before,
        rss_after=server_rss_mb(pid),
        rss_peak=peak[0],
        loadavg=os.getloadavg()[0],
    )


def summary(wave: Wave, delay: float) -> dict[str, Any]:
    extra = [(gap - delay) * 1000 for gap in wave.gaps]
    text_tokens = wave.verdicts["ok"] * wave.tokens
    return {
        "protocol": wave.name,
        "streams": wave.streams,
        "ok": wave.verdicts["ok"],
        "verdicts": dict(wave.verdicts),
        "duplicate_message_ids": wave.duplicate_ids,
        "peak_concurrent": wave.peak_concurrent,
        "seconds": wave.seconds,
        "ttft_ms_p50": percentile(wave.ttft, 50) * 1000,
        "ttft_ms_p99": percentile(wave.ttft, 99) * 1000,
        "gap_ms_p50": percentile(wave.gaps, 50) * 1000,
        "extra_gap_ms_p50": percentile(extra, 50),
        "extra_gap_ms_p99": percentile(extra, 99),
        "extra_gap_ms_max": max(extra, default=float("nan")),
        "server_cpu_us_per_token": wave.server_cpu / max(text_tokens, 1) * 1e6,
        "server_cpu_cores": wave.server_cpu / wave.seconds,
        "client_cpu_cores": wave.client_cpu / wave.seconds,
        "client_check_seconds": wave.check_cpu,
        "server_rss_mb_before": wave.rss_before,
        "server_rss_mb_peak": wave.rss_peak,
        "server_rss_mb_after": wave.rss_after,
        "loadavg_1min": wave.loadavg,
        "problems": wave.problems[:20],
    }


async def run_all(
    url: str, pid: int, waves: list[str], *, streams: int, tokens: int, delay: float
) -> tuple[list[Wave], float]:
    """A small warm-up wave (imports, caches, allocator), then each wave in turn."""
    port = int(url.rsplit(":", 1)[1])
    await run_wave("mixed", port, pid, streams=min(streams, 40), tokens=tokens, delay=delay)
    rss_start = server_rss_mb(pid)
    results = []
    for name in waves:
        results.append(await run_wave(name, port, pid, streams=streams, tokens=tokens, delay=delay))
    return results, rss_start


def table(rows: list[dict[str, Any]], streams: int, tokens: int, delay: float) -> Table:
    title = (
        f"{streams} concurrent streams x {tokens} tokens, {delay * 1000:.0f} ms/token "
        f"(scripted), one `streamchat serve` on {os.cpu_count()} cores"
    )
    out = Table(title=title)
    columns = ["protocol", "ok", "lost/dup/order/cross/err", "peak open", "TTFT p50/p99 ms",
               "extra gap p50/p99 ms", f"p99 ≤ {TARGET_P99_EXTRA_MS:.0f}", "server µs/token",
               "server CPU", "server RSS MB before→peak→after", "client CPU",
               "load avg"]  # fmt: skip
    for column in columns:
        out.add_column(column, justify="right", overflow="fold")
    for row in rows:
        v = row["verdicts"]
        bad = "/".join(
            str(v.get(k, 0)) for k in ("lost", "duplicated", "reordered", "crossed", "error")
        )
        incomplete = v.get("incomplete", 0) + v.get("failed", 0)
        out.add_row(
            row["protocol"],
            f"{row['ok']}/{row['streams']}" + (f" ({incomplete} cut)" if incomplete else ""),
            bad + (f" +{row['duplicate_message_ids']} ids" if row["duplicate_message_ids"] else ""),
            str(row["peak_concurrent"]),
            f"{row['ttft_ms_p50']:.0f} / {row['ttft_ms_p99']:.0f}",
            f"{row['extra_gap_ms_p50']:.1f} / {row['extra_gap_ms_p99']:.1f}",
            "yes" if row["extra_gap_ms_p99"] <= TARGET_P99_EXTRA_MS else "no",
            f"{row['server_cpu_us_per_token']:.0f}",
            f"{row['server_cpu_cores']:.2f} cores",
            f"{row['server_rss_mb_before']:.0f}→{row['server_rss_mb_peak']:.0f}"
            f"→{row['server_rss_mb_after']:.0f}",
            f"{row['client_cpu_cores']:.2f} cores",
            f"{row['loadavg_1min']:.1f}",
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams per wave")
    parser.add_argument("--tokens", type=int, default=100, help="text tokens per stream (>= 5)")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per token (scripted)")
    parser.add_argument(
        "--protocol", choices=[*WAVES, "all"], default="all", help="which wave(s) to run"
    )
    parser.add_argument("--quick", action="store_true", help="100 streams x 20 tokens")
    parser.add_argument("--json", help="output path (default results/load.json)")
    args = parser.parse_args()
    if args.quick:
        args.streams, args.tokens = 100, 20
    if args.tokens <= PREFIX_TOKENS:
        parser.error(f"--tokens must be more than {PREFIX_TOKENS}")
    waves = list(WAVES) if args.protocol == "all" else [args.protocol]
    raise_open_files_limit()  # this process holds one socket per stream too
    spec = f"scripted?delay={args.delay}"
    backlog = str(max(2048, args.streams * 2))
    with serve("--model", spec, "--backlog", backlog) as server:
        pid = server.process.pid
        results, rss_start = asyncio.run(
            run_all(
                server.url, pid, waves, streams=args.streams, tokens=args.tokens, delay=args.delay
            )
        )
        rss_end = server_rss_mb(pid)
    rows = [summary(wave, args.delay) for wave in results]
    Console(width=200).print(table(rows, args.streams, args.tokens, args.delay))
    print(
        f"server RSS after warm-up {rss_start:.0f} MB, after all waves {rss_end:.0f} MB; "
        f"client CPU while streaming: median {median([r['client_cpu_cores'] for r in rows]):.2f} "
        "cores (parsing and checking happen after each wave)"
    )
    for row in rows:
        for problem in row["problems"]:
            print(f"  {row['protocol']}: {problem}")
    data = {
        "streams": args.streams,
        "tokens": args.tokens,
        "delay": args.delay,
        "target_p99_extra_ms": TARGET_P99_EXTRA_MS,
        "server_rss_mb_after_warmup": rss_start,
        "server_rss_mb_end": rss_end,
        "waves": rows,
        "machine": machine(),
    }
    print(f"wrote {write_json('load', data, args.json)}")
    return 0 if all(wave.correct for wave in results) else 1


if __name__ == "__main__":
    sys.exit(main())
