"""deploy/'s compose file and Kubernetes example say what deploy/README.md says, and every
``streamchat serve`` flag they pass is one that serve accepts (nginx.conf itself is run by
tests/test_deploy.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from streamchat.cli import serve

DEPLOY = Path(__file__).parent.parent / "deploy"


def serve_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
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
