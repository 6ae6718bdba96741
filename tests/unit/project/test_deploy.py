"""deploy/: every YAML and JSON file parses, and the pieces agree with each other and with the
worker (probe paths and port, drain time vs grace period, the built-in registry, metric names).
Schema validation and ``docker compose config`` need tools outside the project: see
docs/guides/operations.md (and deploy/validate.sh)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
METRICS_PORT = 9100
BUILTINS = "streamtasks.builtins:registry"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s() -> dict[str, dict[str, Any]]:
    """``{kind/name: manifest}`` of every manifest in deploy/k8s."""
    return {
        f"{d['kind']}/{d['metadata']['name']}": d for p in sorted(DEPLOY.glob("k8s/*.yaml")) for d in docs(p)
    }


def config_map() -> dict[str, str]:
    data: dict[str, str] = k8s()["ConfigMap/streamtasks-config"]["data"]
    return data


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.y*ml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert docs(path)


def test_dockerfile_runs_the_builtins_as_non_root_and_drains_on_sigterm() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^USER 10001$", text, re.M) and "useradd --create-home --uid 10001" in text
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert cmd == ["worker", BUILTINS, "--metrics-port", str(METRICS_PORT)]
    assert f"127.0.0.1:{METRICS_PORT}/readyz" in text


def test_compose_workers_run_the_builtins_with_readyz_healthchecks_and_drain_time() -> None:
    services = docs(DEPLOY / "docker-compose.yml")[0]["services"]
    worker = services["worker"]
    command = worker["command"]
    assert command[:2] == ["worker", BUILTINS]
    assert command[command.index("--metrics-port") + 1] == str(METRICS_PORT)
    assert f"http://127.0.0.1:{METRICS_PORT}/readyz" in " ".join(worker["healthcheck"]["test"])
    grace = float(command[command.index("--grace-period") + 1])
    assert float(worker["stop_grace_period"].rstrip("s")) > grace
    assert worker["depends_on"]["db-init"]["condition"] == "service_completed_successfully"
    assert services["db-init"]["command"] == ["db", "init"]
    assert services["postgres"]["image"] == "timescale/timescaledb:latest-pg15"
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"


def test_k8s_probes_hit_the_health_endpoints_on_the_metrics_port() -> None:
    pod = k8s()["Deployment/streamtasks-worker"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    [port] = container["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", METRICS_PORT)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert f"--metrics-port {METRICS_PORT}" in " ".join(container["args"])
    assert BUILTINS in " ".join(container["args"])
    assert config_map()["STREAMTASKS_METRICS_PORT"] == str(METRICS_PORT)
    annotations = k8s()["Deployment/streamtasks-worker"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)


def test_k8s_termination_grace_outlasts_the_worker_drain() -> None:
    pod = k8s()["Deployment/streamtasks-worker"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > float(config_map()["STREAMTASKS_GRACE_PERIOD"])


def test_k8s_pieces_refer_to_each_other() -> None:
    """PDB selects the Deployment's pods; env comes from the ConfigMap and Secret that exist;
    the Ray address names the RayCluster's head service."""
    manifests = k8s()
    deployment = manifests["Deployment/streamtasks-worker"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = manifests["PodDisruptionBudget/streamtasks-worker"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    refs = {next(iter(r)): next(iter(r.values()))["name"] for r in container["envFrom"]}
    assert f"ConfigMap/{refs['configMapRef']}" in manifests and f"Secret/{refs['secretRef']}" in manifests
    ray = next(m for key, m in manifests.items() if key.startswith("RayCluster/"))
    assert config_map()["STREAMTASKS_RAY_ADDRESS"] == f"{ray['metadata']['name']}-head-svc:6379"
    images = {container["image"]} | {
        c["image"]
        for spec in [ray["spec"]["headGroupSpec"], *ray["spec"]["workerGroupSpecs"]]
        for c in spec["template"]["spec"]["containers"]
    }
    assert len(images) == 1, "the Ray cluster must run the worker image (same handlers, same Ray)"


def test_grafana_dashboard_only_uses_metrics_the_worker_exports() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    observe = ROOT / "streamtasks" / "observe"
    source = (observe / "metrics.py").read_text() + (observe / "gauges.py").read_text()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {
        re.sub(r"_(bucket|sum|count|total)$", "", n) for e in exprs for n in re.findall(r"streamtasks_\w+", e)
    }
    missing = sorted(n for n in names if f'"{n}"' not in source)
    assert not missing, f"dashboard uses metrics metrics.py and gauges.py do not define: {missing}"
    core = [
        "group_lag",
        "group_pending",
        "oldest_pending_age_seconds",
        "dead_letters",
        "end_to_end_latency_seconds",
    ]
    assert {f"streamtasks_{n}" for n in core} <= names
