"""The parts of a deployment, on loopback, for tests and benchmarks/scaleout.py: a throwaway
PostgreSQL cluster from Debian's binaries, and nginx running deploy/nginx.conf.

PostgreSQL refuses to run as root (tests and CI run as root here), so when we are root the
cluster belongs to the ``postgres`` user and every command runs through ``runuser``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamchat.testing.process import HOST, free_port, wait_healthy

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
BIN = next((d for d in BIN_DIRS if (d / "initdb").exists()), None)
USER = "postgres"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_CONF = Path(__file__).parent.parent / "deploy" / "nginx.conf"


def unavailable() -> str | None:
    """Why no cluster can be started here, or ``None``."""
    if BIN is None:
        return "no PostgreSQL binaries under /usr/lib/postgresql/*/bin"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(USER)
        except KeyError:
            return "running as root and there is no postgres user to run PostgreSQL as"
    return None


@dataclass
class Cluster:
    directory: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, str(BIN / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def start(self) -> None:
        """Start the server (a running one is left as it is)."""
        if (
            self.run("pg_ctl", "-D", str(self.directory / "data"), "status", check=False).returncode
            == 0
        ):
            return
        options = f"-p {self.port} -k {self.directory} -c listen_addresses={HOST}"
        options += " -c max_connections=200 -c fsync=off"
        log = str(self.directory / "server.log")
        self.run(
            "pg_ctl", "-D", str(self.directory / "data"), "-o", options, "-l", log, "-w", "start"
        )

    def stop(self) -> None:
        self.run(
            "pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop", check=False
        )

    def sql(self, statement: str) -> str:
        result = self.run(
            "psql",
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-At",
            "-c",
            statement,
        )
        return result.stdout.strip()


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """initdb + pg_ctl start in a temporary folder; stopped and removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="streamchat-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, USER, USER)
    found = Cluster(directory, free_port())
    try:
        found.run(
            "initdb", "-D", str(directory / "data"), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        found.start()
        yield found
    finally:
        found.stop()
        shutil.rmtree(directory, ignore_errors=True)


def nginx_unavailable() -> str | None:
    if not Path(NGINX).exists():
        return "no nginx (make test installs Debian's nginx when it runs as root)"
    return None


@contextlib.contextmanager
def nginx(upstreams: list[str]) -> Iterator[str]:
    """deploy/nginx.conf as shipped, with its upstream servers (``host:port``) and listen port
    put on loopback; yields its URL."""
    directory = Path(tempfile.mkdtemp(prefix="streamchat-nginx-"))
    port = free_port()
    text = NGINX_CONF.read_text()
    text, replaced = re.subn(r"(?m)^\s*server streamchat-\d:8080([^\n]*)\n", "", text)
    assert replaced == 2, "deploy/nginx.conf: two upstream servers expected"
    servers = "".join(f"\n        server {u} max_fails=1 fail_timeout=5s;" for u in upstreams)
    text = text.replace("least_conn;", "least_conn;" + servers, 1)
    text, listens = re.subn(r"listen 8080;", f"listen {HOST}:{port};", text)
    assert listens == 1, "deploy/nginx.conf: one listen 8080 expected"
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    temp = "".join(
        f"\n    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {", "http {" + temp, 1)
    conf = directory / "nginx.conf"
    conf.write_text(text)
    settings = f"daemon off; pid {directory}/nginx.pid; error_log {directory}/error.log warn;"
    process = subprocess.Popen(
        [NGINX, "-p", str(directory), "-c", str(conf), "-g", settings],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://{HOST}:{port}"
    try:
        wait_healthy(url, lambda: process.poll() is None, 20)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)
