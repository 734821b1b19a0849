"""1,000 concurrent streams through one ``streamchat serve``: nothing lost, duplicated, reordered
or crossed, and how much later than the script each token arrives.

The server (a subprocess) runs the scripted provider with a per-token delay; it echoes each
prompt, and every prompt is unique (``s<stream>.<word>``), so each stream's text is known and is
checked byte for byte, along with its exact event sequence and a message id no other stream has.
The client is one asyncio process kept deliberately light while streams run: a raw
``asyncio.Protocol`` per connection that only timestamps and keeps what it reads; HTTP (h11)
and the protocol (streamchat's own SSE / eventstream decoders) are parsed after the wave, so
the client's own CPU time is measured and reported apart.

Extra gap = inter-token gap seen by the client - the configured delay (wall). Target on 2 cores:
all streams complete and correct, p99 extra gap <= 100 ms. Server RSS (VmRSS) and CPU
(utime+stime) come from /proc/<pid>/.

Against the bare Starlette app (``_bare_app.py``, the same scripted stream with no streamchat
in it) on the same ASGI server: both servers are up at once, and for each transport the
Anthropic wave runs on one then the other, who goes first swapping, ``--repeats`` (3) times;
rows give median [min–max] over the repeats. The other protocols' waves (correctness of each
API under load) run once each on streamchat.
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

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h11
from rich.console import Console
from rich.table import Table

from _common import compare, percentile, rotation, write_result
from protocols import PROTOCOLS, Protocol
from serving import serve
from streamchat.cli.serve import raise_open_files_limit
from streamchat.server.listen import SERVERS

RESULT_KEYS = ("streams", "tokens", "delay", "repeats", "target_p99_extra_ms", "server_rss_mb",
               "waves", "comparisons")  # fmt: skip
PACKAGES = ("h11", "h2", "uvicorn", "hypercorn", "granian", "starlette")
HOST = "127.0.0.1"
TARGET_P99_EXTRA_MS = 100.0
WAVES = ("anthropic", "openai", "bedrock", "invoke", "mixed")
# h1: one HTTP/1.1 connection per stream; h2-shared: many HTTP/2 streams per connection (prior
# knowledge); h2-each: one HTTP/2 connection per stream
TRANSPORTS = ("h1", "h2-shared", "h2-each")
H2_REQUEST_WINDOW = 60_000  # requests sent at once must fit the server's first 64 KB window
H2_MAX_STREAMS_PER_CONNECTION = 100
BARE_APP = Path(__file__).parent / "_bare_app.py"
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
    # HTTP/2: the stream's status, DATA payloads and END_STREAM, decoded after the wave
    status: int | None = None
    body: list[tuple[float, bytes]] | None = None
    complete: bool = False


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


def _h2_connection(raws: list[Raw], tokens: int, port: int) -> h2.connection.H2Connection:
    """A client connection that has sent every request of ``raws`` (prior knowledge), with
    windows so large that the server never waits for this client to acknowledge data."""
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    conn.increment_flow_control_window(2**31 - 1 - 65_535)
    for raw in raws:
        body = json.dumps(raw.protocol.body(raw.prompt, tokens + 8)).encode()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [
            (":method", "POST"), (":path", raw.protocol.stream_path), (":scheme", "http"),
            (":authority", f"{HOST}:{port}"), ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ])  # fmt: skip
        conn.send_data(stream_id, body, end_stream=True)
    return conn


async def run_h2_connection(raws: list[Raw], tokens: int, port: int, timeout: float) -> None:
    """The streams of ``raws`` on one HTTP/2 connection: every request, then a graceful GOAWAY
    (the server finishes them and closes); reads are kept and decoded after the wave."""
    conn = _h2_connection(raws, tokens, port)
    conn.close_connection()
    payload = conn.data_to_send()
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    started = time.perf_counter()
    for raw in raws:
        raw.started = started
    try:
        transport, collector = await asyncio.wait_for(
            loop.create_connection(lambda: _Collector(closed), HOST, port), timeout
        )
    except (OSError, TimeoutError) as error:
        for raw in raws:
            raw.failure = f"connect: {type(error).__name__}: {error}"
        return
    transport.write(payload)
    try:
        await asyncio.wait_for(closed, timeout)
    except TimeoutError:
        for raw in raws:
            raw.failure = f"timeout after {timeout:.0f}s"
        transport.abort()
    for raw in raws:
        raw.reads = collector.reads  # the connection's, shared; decode_h2 splits them


def decode_h2(raws: list[Raw], tokens: int, port: int) -> None:
    """Split one connection's reads into each stream's status, DATA and end."""
    if not raws or raws[0].failure:
        return
    conn = _h2_connection(raws, tokens, port)  # the same client state, to decode the replies
    conn.data_to_send()
    by_id = {2 * i + 1: raw for i, raw in enumerate(raws)}
    for raw in raws:
        raw.body = []
    for arrived, data in raws[0].reads:
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            for raw in raws:
                raw.failure = raw.failure or f"HTTP/2 protocol error: {error}"
            return
        for event in events:
            raw = by_id.get(getattr(event, "stream_id", 0) or 0)
            if raw is None:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                raw.status = int(dict(event.headers)[":status"])
            elif isinstance(event, h2.events.DataReceived):
                raw.body.append((arrived, event.data))  # type: ignore[union-attr]
            elif isinstance(event, h2.events.StreamEnded):
                raw.complete = True
        conn.data_to_send()


def h2_groups(raws: list[Raw], tokens: int, shared: bool) -> list[list[Raw]]:
    """Connections for an HTTP/2 wave: as many streams per connection as fit the window."""
    if not shared:
        return [[raw] for raw in raws]
    groups: list[list[Raw]] = [[]]
    size = 0
    for raw in raws:
        length = len(json.dumps(raw.protocol.body(raw.prompt, tokens + 8))) + 64
        if groups[-1] and (
            size + length > H2_REQUEST_WINDOW or len(groups[-1]) >= H2_MAX_STREAMS_PER_CONNECTION
        ):
            groups.append([])
            size = 0
        groups[-1].append(raw)
        size += length
    return groups


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


def http1_body(raw: Raw) -> tuple[int, bool, list[tuple[float, bytes]]]:
    """Status, completeness and timed body bytes of an HTTP/1.1 response (h11)."""
    http = h11.Connection(h11.CLIENT)
    headers = [("Host", HOST), ("Content-Length", "0")]
    http.send(h11.Request(method="POST", target="/", headers=headers))
    http.send(h11.EndOfMessage())
    status, complete, body = 0, False, []
    for arrived, data in raw.reads:
        http.receive_data(data)
        while not complete:
            event = http.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body.append((arrived, bytes(event.data)))
            elif isinstance(event, h11.EndOfMessage):
                complete = True
    return status, complete, body


def check(raw: Raw, tokens: int) -> Checked:
    """Parse HTTP (h11, or the HTTP/2 frames already split) then the protocol; compare against
    what the script must produce."""
    if raw.failure:
        return Checked("failed", set(), None, [], raw.failure)
    if raw.body is None:
        status, complete, body = http1_body(raw)
    else:
        status, complete, body = raw.status or 0, raw.complete, raw.body
    reader = raw.protocol.reader()
    times: list[float] = []
    for arrived, data in body:
        times += [arrived] * reader.feed(data)
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
    transport: str
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
    name: str,
    port: int,
    pid: int,
    *,
    streams: int,
    tokens: int,
    delay: float,
    transport: str = "h1",
) -> Wave:
    """``streams`` concurrent streams of ``tokens`` tokens each; ``name`` is a protocol or
    ``mixed`` (all four, round robin); ``transport`` one of :data:`TRANSPORTS`."""
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
        if transport == "h1":
            await asyncio.gather(*(run_stream(raw, tokens, port, timeout) for raw in raws))
        else:
            groups = h2_groups(raws, tokens, shared=transport == "h2-shared")
            await asyncio.gather(
                *(run_h2_connection(group, tokens, port, timeout) for group in groups)
            )
        seconds, client_cpu = time.perf_counter() - started, time.process_time() - client_before
    finally:
        gc.enable()
    server_cpu = server_cpu_seconds(pid) - cpu_before
    stop.set()
    await sampler
    check_before = time.process_time()
    if transport != "h1":
        for group in groups:
            decode_h2(group, tokens, port)
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
        transport=transport,
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
    events = len(wave.gaps) + len(wave.ttft)  # text deltas received
    return {
        "protocol": wave.name,
        "transport": wave.transport,
        "streams": wave.streams,
        "events_per_s": events / wave.seconds if wave.seconds else float("nan"),
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


def serve_both(server: str, waves: list[tuple[str, str]], args: argparse.Namespace) -> tuple[
    list[dict[str, Any]], dict[str, float]
]:  # fmt: skip
    """``streamchat serve`` and the bare app, both up on ``server``: after a warm-up wave on
    each, every transport's Anthropic wave alternates between them ``args.repeats`` times;
    then streamchat's other ``waves`` (protocol, transport) once each."""
    backlog = str(max(2048, args.streams * 2))
    options = ["--backlog", backlog, "--http-server", server]
    sizes = {"streams": args.streams, "tokens": args.tokens, "delay": args.delay}
    with contextlib.ExitStack() as stack:
        apps = {"streamchat": stack.enter_context(
            serve("--model", f"scripted?delay={args.delay}", *options))}  # fmt: skip
        if not args.no_bare:
            bare = [sys.executable, str(BARE_APP)]
            apps["bare"] = stack.enter_context(
                serve(*options, "--delay", str(args.delay), command=bare)
            )
        ports = {app: int(running.url.rsplit(":", 1)[1]) for app, running in apps.items()}
        pids = {app: running.process.pid for app, running in apps.items()}
        rows: list[dict[str, Any]] = []

        def run(app: str, name: str, transport: str, repeat: int | None) -> None:
            wave = asyncio.run(run_wave(name, ports[app], pids[app], transport=transport, **sizes))
            rows.append({"app": app, "server": server, "repeat": repeat,
                         **summary(wave, args.delay)})  # fmt: skip
            print(f"  {app} {server} {transport} {name} (repeat {repeat}): {wave.verdicts['ok']}/"
                  f"{wave.streams} ok, p99 extra {rows[-1]['extra_gap_ms_p99']:.1f} ms",
                  flush=True)  # fmt: skip

        for app in apps:  # warm-up: imports, caches, allocator
            asyncio.run(run_wave("anthropic", ports[app], pids[app], **{
                **sizes, "streams": min(args.streams, 40)}))  # fmt: skip
        rss = {"after_warmup": server_rss_mb(pids["streamchat"])}
        for transport in dict.fromkeys(t for _, t in waves):
            for repeat in range(args.repeats):
                for app in rotation(list(apps), repeat):
                    run(app, "anthropic", transport, repeat)
        for name, transport in waves:
            if name != "anthropic":
                run("streamchat", name, transport, None)
        rss["end"] = server_rss_mb(pids["streamchat"])
    return rows, rss


def comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """streamchat against the bare app on the same server and transport, same run, every
    repeat of the Anthropic wave."""
    out = []
    keys = dict.fromkeys((r["server"], r["transport"]) for r in rows if r["app"] == "bare")
    for server, transport in keys:
        side = {
            app: [r for r in rows if r["app"] == app and r["server"] == server
                  and r["transport"] == transport and r["protocol"] == "anthropic"]
            for app in ("bare", "streamchat")
        }  # fmt: skip
        ok = {app: f"{sum(r['ok'] for r in got)}/{sum(r['streams'] for r in got)}"
              for app, got in side.items()}  # fmt: skip
        where = f"{rows[0]['streams']} streams, {transport}, {server}"
        extra = {"streams_ok": ok}
        out.append(compare(
            f"extra inter-token gap p99, {where}", "ms wall", "bare Starlette app",
            [r["extra_gap_ms_p99"] for r in side["bare"]], "streamchat serve",
            [r["extra_gap_ms_p99"] for r in side["streamchat"]], "lower", target=1.5, **extra,
        ))  # fmt: skip
        out.append(compare(
            f"events/s, {where}", "events/s wall", "bare Starlette app",
            [r["events_per_s"] for r in side["bare"]], "streamchat serve",
            [r["events_per_s"] for r in side["streamchat"]], "higher", target=0.9, **extra,
        ))  # fmt: skip
    return out


def table(rows: list[dict[str, Any]], streams: int, tokens: int, delay: float) -> Table:
    title = (
        f"{streams} concurrent streams x {tokens} tokens, {delay * 1000:.0f} ms/token "
        f"(scripted), `streamchat serve` and the bare app on {os.cpu_count()} cores"
    )
    out = Table(title=title)
    columns = ["app", "server", "http", "protocol", "repeat", "ok", "lost/dup/order/cross/err",
               "peak open", "events/s", "TTFT p50/p99 ms",
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
            row["app"],
            row["server"],
            row["transport"],
            row["protocol"],
            "—" if row["repeat"] is None else str(row["repeat"] + 1),
            f"{row['ok']}/{row['streams']}" + (f" ({incomplete} cut)" if incomplete else ""),
            bad + (f" +{row['duplicate_message_ids']} ids" if row["duplicate_message_ids"] else ""),
            str(row["peak_concurrent"]),
            f"{row['events_per_s']:.0f}",
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
        "--protocol", choices=[*WAVES, "all"], default="all", help="which HTTP/1.1 wave(s) to run"
    )
    parser.add_argument(
        "--servers",
        default="dual",
        help=f"comma-separated ASGI servers to compare ({', '.join(SERVERS)}; default dual)",
    )
    parser.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help=f"comma-separated transports ({', '.join(TRANSPORTS)}); HTTP/2 waves run the "
        "anthropic and mixed protocols",
    )
    parser.add_argument("--no-bare", action="store_true", help="skip the bare-app baseline")
    parser.add_argument("--repeats", type=int, default=3, help="A/B repeats per transport (3)")
    parser.add_argument("--quick", action="store_true", help="100 streams x 20 tokens")
    parser.add_argument("--json", help="output path (default results/load.json)")
    args = parser.parse_args()
    if args.quick:
        args.streams, args.tokens = 100, 20
    if args.tokens <= PREFIX_TOKENS:
        parser.error(f"--tokens must be more than {PREFIX_TOKENS}")
    servers = [name for name in args.servers.split(",") if name]
    transports = [name for name in args.transports.split(",") if name]
    for name in servers:
        if name not in SERVERS:
            parser.error(f"--servers: unknown server {name!r}")
    for name in transports:
        if name not in TRANSPORTS:
            parser.error(f"--transports: unknown transport {name!r}")
    protocols = list(WAVES) if args.protocol == "all" else [args.protocol]
    raise_open_files_limit()  # this process holds one socket per stream too
    rows: list[dict[str, Any]] = []
    rss: dict[str, Any] = {}
    for server in servers:
        usable = [t for t in transports if t == "h1" or server != "uvicorn"]  # uvicorn: 1.1
        ours = [(p, "h1") for p in protocols if "h1" in usable]
        ours += [(p, t) for t in usable if t != "h1" for p in ("anthropic", "mixed")]
        if ours:
            got, rss[server] = serve_both(server, ours, args)
            rows += got
    Console(width=220).print(table(rows, args.streams, args.tokens, args.delay))
    compared = comparisons(rows)
    for item in compared:
        print(
            f"  {item['metric']}: bare {item['baseline_value']:.1f}, "
            f"streamchat {item['streamchat_value']:.1f} (x{item['ratio']:.2f}, medians, "
            f"target {'<=' if item['better'] == 'lower' else '>='} {item['target']})"
        )
    for row in rows:
        for problem in row["problems"]:
            print(f"  {row['app']} {row['server']} {row['transport']} {row['protocol']}: {problem}")
    data = {
        "streams": args.streams,
        "tokens": args.tokens,
        "delay": args.delay,
        "repeats": args.repeats,
        "target_p99_extra_ms": TARGET_P99_EXTRA_MS,
        "server_rss_mb": rss,
        "waves": rows,
        "comparisons": compared,
    }
    path = write_result("load", data, keys=RESULT_KEYS, packages=PACKAGES, path=args.json)
    print(f"wrote {path}")
    return 0 if all(row["ok"] == row["streams"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
