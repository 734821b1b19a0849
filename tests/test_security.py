"""Access control and limits: loopback by default, the API key on every route, body and
``max_tokens`` caps, static files kept in their folder, private history files.

Only loopback addresses are ever bound here: "not exposed by default" is checked by asking a
second loopback address (127.0.0.2) for the port a default server listens on.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount, Route

from protocols import PROTOCOLS, Protocol, error_type_of, family_of
from serving import HOST, free_port, serve, serve_in_thread, wait_healthy
from streamchat.cli.serve import is_loopback
from streamchat.server.app import create_app
from streamchat.server.common import ServerConfig

KEY = "k-0123456789"
IDS = list(PROTOCOLS)
# Routes anyone may call. Each is here on purpose: the page and its files hold no data (the page
# asks for the key and sends it with every API call); /healthz is for liveness probes.
PUBLIC = {
    "/healthz": "liveness",
    "/readyz": "readiness (probes send no key)",
    "/": "the chat page",
    "/static": "the page's files",
}


# -- binding ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def launch(*host: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``streamchat serve [--host HOST]`` on a free port, until the block exits."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "STREAMCHAT_API_KEY"}
    command = [sys.executable, "-m", "streamchat.cli.main", "serve", *host, "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--model", "scripted", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        address = host[1] if host else HOST
        wait_healthy(f"http://{address}:{port}", lambda: process.poll() is None, 60)
        yield port, process
    finally:
        process.terminate()
        process.wait(15)


def accepts(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) == 0


def output_of(process: subprocess.Popen[str]) -> str:
    process.terminate()
    return process.communicate(timeout=15)[0]


def test_by_default_only_127_0_0_1_is_bound_and_nothing_is_said() -> None:
    with launch() as (port, process):
        assert accepts("127.0.0.1", port)
        assert not accepts("127.0.0.2", port)  # a wildcard (0.0.0.0) bind would accept this
        assert "warning" not in output_of(process)


def test_another_loopback_address_serves_without_a_warning() -> None:
    with launch("--host", "127.0.0.2") as (port, process):
        assert accepts("127.0.0.2", port) and not accepts("127.0.0.1", port)
        assert "warning" not in output_of(process)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.255.254", True), ("::1", True),
        ("[::1]", True), ("localhost", True), ("0.0.0.0", False), ("::", False),
        ("10.0.0.1", False), ("192.168.1.20", False), ("fe80::1", False), ("example.com", False),
    ],
)  # fmt: skip
def test_only_loopback_hosts_count_as_private(host: str, loopback: bool) -> None:
    """The warning for an exposed server (``test_cli_serve``) keys off this."""
    assert is_loopback(host) is loopback


# -- the API key ---------------------------------------------------------------------------------
def endpoints(config: ServerConfig) -> list[tuple[str, str, str]]:
    """``(method, concrete path, route path)`` for every route the app serves."""
    found = []
    for route in create_app(config).routes:
        if isinstance(route, Mount):
            found.append(("GET", route.path + "/index.html", route.path))
        elif isinstance(route, Route):
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            found += [
                (m, path, route.path) for m in sorted(route.methods or {"GET"}) if m != "HEAD"
            ]
        else:
            raise AssertionError(f"a route of unknown kind: {route!r}")
    return found


GUARDED = [e for e in endpoints(ServerConfig(api_key=KEY)) if e[2] not in PUBLIC]


@pytest.fixture(scope="module")
def locked() -> Iterator[str]:
    config = ServerConfig(default_model="scripted", models=[], api_key=KEY)
    with serve_in_thread(config) as url:
        yield url


def test_every_family_of_routes_is_enumerated() -> None:
    routes = {route for _, _, route in GUARDED}
    assert {"/v1/messages", "/v1/chat/completions", "/v1/models", "/api/conversations"} <= routes
    assert "/model/{model_id:path}/converse-stream" in routes
    assert set(PUBLIC) <= {route for _, _, route in endpoints(ServerConfig())}


@pytest.mark.parametrize(
    ("method", "path", "route"), GUARDED, ids=[f"{m} {r}" for m, _, r in GUARDED]
)
@pytest.mark.parametrize("credentials", ["none", "wrong"])
def test_every_route_but_the_public_ones_refuses_a_missing_or_wrong_key(
    locked: str, method: str, path: str, route: str, credentials: str
) -> None:
    headers = {} if credentials == "none" else {"x-api-key": "nope", "authorization": "Bearer nope"}
    if path.startswith("/model/") and credentials == "wrong":
        headers["authorization"] = sigv4("AKIDNOTTHEKEY")
    response = httpx.request(method, locked + path, headers=headers, content=b"{}")
    assert response.status_code in (401, 403), (response.status_code, response.text[:200])
    kind = error_type_of(family_of(path), response.status_code, response.headers, response.content)
    assert kind in ("authentication_error", "UnrecognizedClientException")


def sigv4(access_key: str) -> str:
    """An ``Authorization`` header as botocore signs it (the server reads the key id only)."""
    return (
        f"AWS4-HMAC-SHA256 Credential={access_key}/20250101/us-west-2/bedrock/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, Signature=" + "0" * 64
    )


def key_headers(path: str) -> list[dict[str, str]]:
    """Every way a client of this route may present the key."""
    if path.startswith("/model/"):
        return [{"authorization": sigv4(KEY)}, {"authorization": f"Bearer {KEY}"}]
    return [{"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"}]


@pytest.mark.parametrize(
    ("method", "path", "route"), GUARDED, ids=[f"{m} {r}" for m, _, r in GUARDED]
)
def test_the_right_key_opens_every_route_each_way_a_client_sends_it(
    locked: str, method: str, path: str, route: str
) -> None:
    for headers in key_headers(path):
        response = httpx.request(method, locked + path, headers=headers, content=b"{}")
        assert response.status_code not in (401, 403), (headers, response.text[:200])


def test_public_routes_need_no_key(locked: str) -> None:
    for _, path, _ in [e for e in endpoints(ServerConfig()) if e[2] in PUBLIC]:
        assert httpx.get(locked + path).status_code == 200, path


# -- request limits ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def limited() -> Iterator[str]:
    config = ServerConfig(default_model="scripted", models=[], max_body_bytes=4096,
                          max_tokens_limit=64)  # fmt: skip
    with serve_in_thread(config) as url:
        yield url


def too_large(protocol: Protocol, response: httpx.Response) -> None:
    """413 request_too_large (Bedrock has no 413: a ValidationException naming the limit)."""
    kind = error_type_of(protocol.family, response.status_code, response.headers, response.content)
    if protocol.family == "bedrock":
        assert (response.status_code, kind) == (400, "ValidationException")
        assert "exceeds 4096 bytes" in response.json()["message"]
    else:
        assert (response.status_code, kind) == (413, "request_too_large")


@pytest.mark.parametrize("protocol", PROTOCOLS.values(), ids=IDS)
def test_a_body_over_the_limit_is_refused_even_without_a_content_length(
    limited: str, protocol: Protocol
) -> None:
    def chunks() -> Iterator[bytes]:  # Transfer-Encoding: chunked, no length declared
        yield b'{"messages": ['
        for _ in range(100):
            yield b'{"role": "user", "content": "' + b"x" * 100 + b'"},'
        yield b"]}"

    too_large(protocol, httpx.post(limited + protocol.stream_path, content=chunks()))


@pytest.mark.parametrize("protocol", PROTOCOLS.values(), ids=IDS)
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    limited: str, protocol: Protocol
) -> None:
    port = int(limited.rsplit(":", 1)[1])
    head = (
        f"POST {protocol.stream_path} HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {10**12}\r\n\r\n"
    )
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(head.encode())  # and not one byte of the terabyte
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    raw_headers, _, body = rest.partition(b"\r\n\r\n")
    headers = [tuple(line.decode().split(": ", 1)) for line in raw_headers.split(b"\r\n")]
    response = httpx.Response(int(status_line.split()[1]), headers=headers, content=body)
    too_large(protocol, response)


MAX_TOKENS_FIELD = {
    "anthropic": "max_tokens",
    "openai": "max_completion_tokens",
    "bedrock": "inferenceConfig.maxTokens",
    "invoke": "max_tokens",
}


@pytest.mark.parametrize("protocol", PROTOCOLS.values(), ids=IDS)
def test_max_tokens_above_the_servers_cap_is_refused_naming_the_field(
    limited: str, protocol: Protocol
) -> None:
    response = httpx.post(limited + protocol.stream_path, json=protocol.body("hi", 65))
    kind = error_type_of(protocol.family, response.status_code, response.headers, response.content)
    assert (response.status_code, kind) in ((400, "invalid_request_error"),
                                            (400, "ValidationException"))  # fmt: skip
    message = response.json()["message" if protocol.family == "bedrock" else "error"]
    text = message if isinstance(message, str) else message["message"]
    assert text.startswith(f"{MAX_TOKENS_FIELD[protocol.name]}: must be between 1 and 64")
    at_cap = httpx.post(limited + protocol.stream_path, json=protocol.body("hi", 64))
    assert at_cap.status_code == 200


# -- the web page's files ------------------------------------------------------------------------
def static_mount() -> Mount | None:
    return next((r for r in create_app().routes if isinstance(r, Mount)), None)


ESCAPES = [
    "/../server/web.py", "/%2e%2e/server/web.py", "/%2E%2E/%2E%2E/streamchat/server/web.py",
    "/..%2fserver%2fweb.py", "/%2e%2e%2fserver%2fweb.py", "/....//server/web.py",
    "/..\\server\\web.py", "/%252e%252e/server/web.py", "/%2fetc%2fpasswd", "//etc/passwd",
    "/..%00/server/web.py", "/./../server/web.py",
]  # fmt: skip


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET exactly ``target``: an HTTP client would resolve the dot segments first."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while data := sock.recv(65536):
            answer += data
    return int(answer.split(b" ", 2)[1]), answer.partition(b"\r\n\r\n")[2]


def test_static_paths_cannot_leave_the_web_folder() -> None:
    mount = static_mount()
    assert mount is not None, "the server mounts no static files: the web page is part of serve"
    source = (Path(__file__).parent.parent / "src/streamchat/server/web.py").read_bytes()
    with serve_in_thread(ServerConfig(default_model="scripted", models=[])) as url:
        status, _ = raw_get(url, mount.path + "/app.js")
        assert status == 200  # the mount serves files: the refusals below are about the path
        for escape in ESCAPES:
            status, body = raw_get(url, mount.path + escape)
            assert status in (400, 404), (escape, status)
            assert b"def routes" not in body and b"root:" not in body and source not in body


def test_the_page_forbids_inline_and_foreign_script() -> None:
    with serve_in_thread(ServerConfig(default_model="scripted", models=[])) as url:
        policy = httpx.get(url + "/").headers.get("content-security-policy", "")
    directives = dict(d.strip().partition(" ")[::2] for d in policy.split(";") if d.strip())
    script = directives.get("script-src", directives.get("default-src", ""))
    assert script.split() == ["'self'"], policy
    assert (
        directives.get("object-src") == "'none'" and directives.get("frame-ancestors") == "'none'"
    )


# -- history files -------------------------------------------------------------------------------
@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 000: any privacy of the files below is the code's doing, not the environment's."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("where", ["--db", "default"])
def test_history_files_are_readable_by_their_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, permissive_umask: None, where: str
) -> None:
    monkeypatch.delenv("STREAMCHAT_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    folder = tmp_path / "private" if where == "--db" else tmp_path / "data" / "streamchat"
    db = folder / "history.db"
    args = ["--db", str(db)] if where == "--db" else ["--history"]
    protocol = PROTOCOLS["anthropic"]
    with serve("--model", "scripted", *args) as server:
        reply = httpx.post(server.url + protocol.stream_path, json=protocol.body("secret", 20))
        assert reply.status_code == 200
        files = [db, db.with_name("history.db-wal"), db.with_name("history.db-shm")]
        assert all(path.exists() for path in files), sorted(folder.iterdir())
        assert mode(folder) == 0o700
        assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}


def test_other_sites_cannot_drive_a_local_server_from_the_browser() -> None:
    """Cross-origin POSTs (CSRF) and rebound host names (DNS rebinding) are refused; SDK
    clients, which send no Origin and use the address they were given, are not."""
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with serve_in_thread(
        ServerConfig(default_model="scripted?tag=guard", loopback_only=True)
    ) as url:
        port = url.rsplit(":", 1)[1]
        post = lambda **headers: httpx.post(f"{url}/v1/messages", json=body, headers=headers)  # noqa: E731
        assert post().status_code == 200
        assert post(origin=url).status_code == 200  # the web page itself
        refused = post(origin="https://evil.example")
        assert refused.status_code == 403
        assert refused.json()["error"]["type"] == "permission_error"
        assert post(host=f"evil.example:{port}").status_code == 403
        assert post(host=f"localhost:{port}").status_code == 200


def test_a_server_bound_beyond_loopback_accepts_its_real_host_names() -> None:
    config = ServerConfig(default_model="scripted?tag=guard2", loopback_only=False)
    with serve_in_thread(config) as url:
        response = httpx.get(f"{url}/healthz", headers={"host": "chat.example.internal"})
    assert response.status_code == 200


def test_streamchat_serve_on_loopback_guards_against_dns_rebinding() -> None:
    with serve("--model", "scripted?tag=guard3") as server:
        port = server.url.rsplit(":", 1)[1]
        rebound = httpx.get(f"{server.url}/v1/models", headers={"host": f"attacker.example:{port}"})
        direct = httpx.get(f"{server.url}/v1/models")
    assert (rebound.status_code, direct.status_code) == (403, 200)
