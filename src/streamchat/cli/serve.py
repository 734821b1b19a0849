"""``streamchat serve``: the Anthropic, OpenAI and Bedrock wire protocols over one local model.

Binds loopback by default; exposing it elsewhere without ``--api-key`` earns a warning, since
anyone who can reach the port can then spend this machine's CPU.

As one of several replicas behind a load balancer: ``--history postgresql://…`` shares the
history, ``--replica NAME`` names it (metrics label, response header), and SIGTERM drains:
the listener closes, ``/readyz`` turns 503, open streams get ``--drain-seconds`` to finish and
the rest end with their protocol's error frame, their history rows marked interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Iterator

from ..errors import InvalidRequestError
from ..providers import get_provider, local, split_model
from ..providers.local import DEFAULT_LOCAL_MODEL
from ..server import workers
from ..server.common import ServerConfig
from ..server.guard import is_loopback_name as is_loopback
from ..server.listen import SERVERS, Listener
from .history import add_server_history_options, server_history_path
from .options import add_base_url_option, bounded
from .testbench import add_testbench_options, replay_model, testbench_config

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
GRACEFUL_SHUTDOWN_SECONDS = 5  # open streams get this long to finish on SIGTERM or Ctrl-C
DEFAULTS = ServerConfig()
MAX_BODY_BYTES = DEFAULTS.max_body_bytes
FULL_GC_THRESHOLD = 100  # CPython's default is 10 younger collections per full one
PORT = bounded(int, 1, 65_535)
BACKLOG = 2048  # uvicorn's default; raise it when thousands of clients connect at once


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the Anthropic, OpenAI and Bedrock APIs over HTTP",
        description="Serve a model over the Anthropic Messages, OpenAI Chat Completions and "
        "Bedrock Runtime protocols, for their official SDKs. Requests for unknown model ids "
        "are answered by --model, echoing the requested id.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=PORT, default=8080, help="port (default 8080)")
    parser.add_argument(
        "-m",
        "--model",
        default=os.environ.get("STREAMCHAT_MODEL") or DEFAULT_LOCAL_MODEL,
        help=f"the model that serves requests (default {DEFAULT_LOCAL_MODEL})",
    )
    add_base_url_option(parser)
    parser.add_argument(
        "--strict-models",
        action="store_true",
        help="answer a request for a model this server does not serve with a not-found error "
        "(by default --model answers it, echoing the requested id)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("STREAMCHAT_API_KEY") or None,
        help="require this key (x-api-key / Bearer / AWS access key); env STREAMCHAT_API_KEY",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=bounded(int, 1),
        default=MAX_BODY_BYTES,
        help=f"largest request body accepted (default {MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--max-waiting",
        type=bounded(int, 0),
        metavar="N",
        help=f"requests that may wait for a busy embedded model; more get the protocol's "
        f"overload error (default {local.MAX_WAITING})",
    )
    parser.add_argument(
        "--parallel",
        type=bounded(int, 1),
        metavar="N",
        help=f"streams an embedded model decodes together (continuous batching; its context "
        f"holds N x the window); env STREAMCHAT_PARALLEL (default {local.DEFAULT_PARALLEL})",
    )
    parser.add_argument(
        "--context",
        type=bounded(int, 64, 131_072),
        default=local.DEFAULT_CONTEXT,
        metavar="TOKENS",
        help="each stream's window on an embedded model, prompt and reply "
        f"(default {local.DEFAULT_CONTEXT})",
    )
    parser.add_argument(
        "--flash-attn",
        choices=("on", "off"),
        help="llama.cpp's flash attention on an embedded model: faster prefill of a long prompt "
        "alone, slower decoding and prompts beside other streams; env STREAMCHAT_FLASH_ATTN "
        "(default on)",
    )
    parser.add_argument(
        "--backlog",
        type=bounded(int, 1),
        default=BACKLOG,
        help=f"connections the OS queues before they are accepted (default {BACKLOG})",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="serve HTTPS with this certificate (HTTP/2 by ALPN, HTTP/1.1 otherwise)",
    )
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    parser.add_argument(
        "--http-server",
        choices=SERVERS,
        default=os.environ.get("STREAMCHAT_HTTP_SERVER") or "dual",
        help="ASGI server: dual (default) = uvicorn for HTTP/1.1 and hypercorn's HTTP/2 on one "
        "port; uvicorn (HTTP/1.1 only), hypercorn or granian (no h2c upgrade) serve everything; "
        "env STREAMCHAT_HTTP_SERVER",
    )
    parser.add_argument(
        "--replica",
        default=os.environ.get("STREAMCHAT_REPLICA") or None,
        metavar="NAME",
        help="this replica's name: a label on every metric and the x-streamchat-replica "
        "response header (env STREAMCHAT_REPLICA; default: the host name, no metric label)",
    )
    parser.add_argument(
        "--drain-seconds",
        type=bounded(int, 0, 3600),
        default=GRACEFUL_SHUTDOWN_SECONDS,
        metavar="S",
        help="on SIGTERM, how long open streams may finish before they end with their "
        f"protocol's error frame (default {GRACEFUL_SHUTDOWN_SECONDS})",
    )
    parser.add_argument(
        "--workers",
        type=bounded(int, 1, 64),
        default=1,
        metavar="N",
        help="server processes sharing the port (SO_REUSEPORT), for models served elsewhere "
        "(openai/…, anthropic/…, bedrock/…, scripted): one per core (default 1)",
    )
    parser.add_argument(
        "--resume-seconds",
        type=bounded(float, 0, 86_400),
        default=DEFAULTS.resume_seconds,
        metavar="S",
        help="keep a finished resumable stream this long for clients to replay (default "
        f"{DEFAULTS.resume_seconds:g})",
    )
    parser.add_argument(
        "--resume-grace",
        type=bounded(float, 0, 3600),
        default=DEFAULTS.resume_grace_seconds,
        metavar="S",
        help="a resumable stream whose client left generates on this long awaiting it "
        f"(default {DEFAULTS.resume_grace_seconds:g})",
    )
    add_server_history_options(parser)
    add_testbench_options(parser)
    parser.set_defaults(func=run)


def base_url(host: str, port: int, scheme: str = "http") -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def banner(model: str, url: str) -> str:
    """What to paste into each SDK to use this server."""
    return "\n".join(
        [
            f"streamchat serving {model} at {url}",
            f'  Anthropic: anthropic.Anthropic(base_url="{url}", api_key=...)',
            f'  OpenAI:    openai.OpenAI(base_url="{url}/v1", api_key=...)',
            f'  Bedrock:   boto3.client("bedrock-runtime", endpoint_url="{url}")',
            f"  Web chat:  {url}/    Metrics: {url}/metrics",
        ]
    )


def raise_open_files_limit() -> None:
    """Every open stream holds a socket: lift the soft open-files limit to the hard one."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):  # not POSIX, or not allowed: keep the default
        pass


def _stopped(signum: int, frame: object) -> None:
    raise SystemExit(0)


@contextlib.contextmanager
def serving_process() -> Iterator[None]:
    """Process settings for a long-running server, put back afterwards.

    - open files: one socket per stream (see :func:`raise_open_files_limit`);
    - garbage collection: a full collection scans every live object, which with a thousand open
      streams pauses all of them for 100-200 ms; consider one 10x less often (young cycles are
      still collected as before);
    - SIGTERM: uvicorn shuts down gracefully, then raises the signal again so that the previous
      handler runs; the default one would kill the process (exit -15) after a clean shutdown.
    """
    raise_open_files_limit()
    threshold = gc.get_threshold()
    gc.set_threshold(*threshold[:2], FULL_GC_THRESHOLD)
    # Everything alive at start-up (modules, the app) lives as long as the process: keep it out
    # of every later full collection, which then walks only what serving allocates.
    gc.collect()
    gc.freeze()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stopped) if in_main else None
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    from ..server import listen

    args.model = replay_model(args) or args.model
    if bool(args.tls_cert) != bool(args.tls_key):
        raise InvalidRequestError("--tls-cert and --tls-key: give both or neither")
    if split_model(args.model) is None:
        raise InvalidRequestError(f"--model: unknown model {args.model!r}")
    listen.check_versions(args.http_server)
    if args.workers > 1:
        check_workers(args)
    settings = local.LocalSettings(
        parallel=args.parallel,
        max_waiting=local.MAX_WAITING if args.max_waiting is None else args.max_waiting,
        context=args.context,
        flash_attn=None if args.flash_attn is None else args.flash_attn == "on",
    )
    get_provider(args.model, settings)  # a missing model file or bad option fails here
    if args.workers > 1:  # each worker forks from here: no thread, socket or database yet
        print(banner(args.model, base_url(args.host, args.port, scheme_of(args))), flush=True)
        print(f"  {args.workers} workers share the port", flush=True)
        return workers.supervise(args.workers, lambda index: serve_one(args, settings, index))
    return serve_one(args, settings)


def check_workers(args: argparse.Namespace) -> None:
    """``--workers`` serves models that run elsewhere, on the servers that take SO_REUSEPORT."""
    if split_model(args.model)[0] == "local":
        raise InvalidRequestError(
            "--workers: an embedded model runs in one process (its engine batches every "
            "stream and uses every core); use --parallel"
        )
    if args.http_server not in ("dual", "uvicorn"):
        raise InvalidRequestError("--workers: needs --http-server dual or uvicorn")


def scheme_of(args: argparse.Namespace) -> str:
    return "https" if args.tls_cert else "http"


def serve_one(
    args: argparse.Namespace, settings: local.LocalSettings, worker: int | None = None
) -> int:
    """One server process (worker ``worker`` of ``--workers``, if any) until it is stopped."""
    from ..server import listen
    from ..server.app import create_app

    config = ServerConfig(
        local=settings,
        default_model=args.model,
        api_key=args.api_key,
        max_body_bytes=args.max_body_bytes,
        history_path=server_history_path(args),
        history_commit_seconds=args.history_commit_ms / 1000,
        history_strict=args.history_strict,
        loopback_only=is_loopback(args.host),
        strict_models=args.strict_models,
        resume_seconds=args.resume_seconds,
        resume_grace_seconds=args.resume_grace,
        **testbench_config(args),
    )
    if not is_loopback(args.host) and not config.api_key:
        print(
            f"streamchat: warning: serving on {args.host} without --api-key: "
            "anyone who can reach this port can use it",
            file=sys.stderr,
        )
    if worker is None:
        print(banner(args.model, base_url(args.host, args.port, scheme_of(args))), flush=True)
    replica = f"{args.replica}.{worker}" if args.replica and worker is not None else args.replica
    app = create_app(config, replica=replica)
    lifecycle = app.state.lifecycle

    def drain() -> None:  # SIGTERM: /readyz says so while open streams finish
        lifecycle.draining = True

    with serving_process():
        listener = Listener(
            host=args.host,
            port=args.port,
            backlog=args.backlog,
            log_level=args.log_level,
            graceful_seconds=args.drain_seconds,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            on_stop=drain,
            reuse_port=worker is not None,
        )
        listen.run(app, listener, args.http_server)
    return 0
