"""deploy/'s compose file and Kubernetes example say what deploy/README.md says, and every
``streamchat serve`` flag they pass is one that serve accepts (nginx.conf itself is run by
tests/test_deploy.py).

The image's recipe runs without a container engine: a clean venv gets exactly the Dockerfile's
``pip install`` (its extras, parsed from the Dockerfile), then serves compose's command line
(parsed from compose.yaml) against a real PostgreSQL and an OpenAI-compatible upstream, and the
openai SDK's request through it lands in the history.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

import deployment as parts
from serving import serve, serve_in_thread
from streamchat.cli import serve as serve_command
from streamchat.server.common import ServerConfig
from venvs import build_wheel, clean_venv, venv_run

DEPLOY = Path(__file__).parent.parent / "deploy"
# the Dockerfile's install of the project: pip install [options] ".[extras]"
INSTALL = re.compile(r'^RUN pip install (?:--[a-z-]+ )*"?\.\[([a-z,]+)\]"?$', re.MULTILINE)
UPSTREAM_TEXT = "Served by the upstream model."


def serve_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_command.register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def seconds(text: str) -> int:
    return int(text.removesuffix("s"))


def test_compose_runs_nginx_two_named_replicas_postgres_and_a_model_server() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"nginx", "streamchat-1", "streamchat-2", "postgres", "model"} <= set(services)
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    names = set()
    for name in ("streamchat-1", "streamchat-2"):
        replica = services[name]
        names.add(replica["environment"]["STREAMCHAT_REPLICA"])
        args = serve_args(replica["command"])
        assert args.history is True and args.db.startswith("postgresql://streamchat:")
        assert args.base_url == "http://model:8000/v1"
        assert seconds(replica["stop_grace_period"]) > args.drain_seconds
        assert "/readyz" in " ".join(replica["healthcheck"]["test"])
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert names == {"streamchat-1", "streamchat-2"}


def test_kubernetes_deployment_probes_readiness_and_drains_within_its_grace_period() -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "streamchat.yaml").read_text()))
    kinds = {doc["kind"]: doc for doc in documents}
    assert {"Deployment", "Service", "Ingress"} <= set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = serve_args(container["args"])
    assert args.history is True and args.db is None  # the URL comes from $STREAMCHAT_DB
    env = {item["name"]: item for item in container["env"]}
    assert env["STREAMCHAT_DB"]["valueFrom"]["secretKeyRef"]["key"] == "database-url"
    assert env["STREAMCHAT_REPLICA"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] > args.drain_seconds + 5  # + the preStop sleep
    annotations = kinds["Ingress"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"


def test_nginx_conf_streams() -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    for directive in (
        "least_conn;",
        "keepalive 64;",
        "proxy_http_version 1.1;",
        "proxy_buffering off;",
        "proxy_read_timeout 3600s;",
    ):
        assert directive in text, directive


# --- the image's recipe, without a container engine ----------------------------------------


def dockerfile_extras() -> str:
    """The extras of the Dockerfile's one ``pip install`` of the project."""
    (extras,) = INSTALL.findall((DEPLOY / "Dockerfile").read_text())
    return extras


def dockerfile_entrypoint() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("ENTRYPOINT")]
    return json.loads(line.removeprefix("ENTRYPOINT"))


def test_the_image_installs_what_compose_command_needs() -> None:
    """compose runs ``--model openai/...`` with PostgreSQL history: [server,openai,postgres]."""
    assert set(dockerfile_extras().split(",")) >= {"server", "openai", "postgres"}
    assert dockerfile_entrypoint()[:2] == ["streamchat", "serve"]


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clean venv with exactly the image's install (the work tree's wheel, the same extras)."""
    yield clean_venv(build_wheel(tmp_path_factory), dockerfile_extras())


def compose_command(history: str, upstream: str) -> list[str]:
    """A replica's command line from compose.yaml, its services' addresses put on loopback."""
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    args = []
    for arg in compose["services"]["streamchat-1"]["command"]:
        if arg.startswith("--history="):
            arg = f"--history={history}"  # postgresql://...@postgres:5432/... in compose
        elif arg.startswith("--base-url="):
            arg = f"--base-url={upstream}/v1"  # http://model:8000/v1 in compose
        args.append(arg)
    return args


@pytest.mark.extras
@pytest.mark.deploy
@pytest.mark.timeout(900)
@pytest.mark.skipif(parts.unavailable() is not None, reason=str(parts.unavailable()))
def test_the_image_recipe_serves_compose_command_and_logs_to_postgres(image_venv: Path) -> None:
    where = venv_run(image_venv, "python", "-c", "import streamchat; print(streamchat.__file__)")
    assert where.stdout.startswith(str(image_venv)), where.stdout  # the wheel, not src/
    entrypoint = dockerfile_entrypoint()
    upstream_model = f"scripted?text={UPSTREAM_TEXT.replace(' ', '+')}&tag=recipe-upstream"
    key = uuid.uuid4().hex
    prompt = f"recipe check {uuid.uuid4().hex[:8]}"
    with (
        parts.cluster() as db,
        serve_in_thread(ServerConfig(default_model=upstream_model)) as upstream,
        serve(
            *compose_command(db.url, upstream),
            command=[str(image_venv / "bin" / entrypoint[0])],
            env={"STREAMCHAT_API_KEY": key, "STREAMCHAT_REPLICA": "streamchat-1", "PYTHONPATH": ""},
            timeout=120,
        ) as replica,
    ):
        client = openai.OpenAI(base_url=f"{replica.url}/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": prompt}], max_tokens=50
        )
        assert reply.choices[0].message.content == UPSTREAM_TEXT
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=f"{replica.url}/v1", api_key="wrong", max_retries=0
            ).models.list()
        query = (
            "SELECT a.text FROM messages a JOIN messages u ON u.conversation_id = a.conversation_id"
            f" AND u.role = 'user' WHERE a.role = 'assistant' AND u.text = '{prompt}'"
        )
        deadline = time.monotonic() + 20
        while not (stored := db.sql(query)):
            assert time.monotonic() < deadline, "the reply never reached the history"
            time.sleep(0.1)
        assert stored == UPSTREAM_TEXT
