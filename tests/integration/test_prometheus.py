"""A real Prometheus (Debian's package) scrapes the running service under load; every
PromQL expression of the dashboard and the alert rules evaluates without error, and
names only metrics the service exports."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka_support import Topics, link_events, produce, read, running_service, service_config

from consumer.tools.broker import free_port

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "pba-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "pba-stream.json"


def expressions() -> list[str]:
    rules = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    # the dashboard's variables as Grafana sends them with "All" chosen (allValue .*)
    return rules + [t["expr"].replace("$instance", ".*").replace("$mode", ".*")
                    for p in panels for t in p["targets"]]


def api(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Debian's prometheus package is missing: `make test` installs it (make prometheus)")
    return binary


async def test_prometheus_evaluates_every_dashboard_and_rule_expression(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, prometheus_binary: str
) -> None:
    metrics_port, prom_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "pba", "static_configs": [
            {"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }))
    events = link_events(8, 70)
    await produce(kafka_bootstrap, topics.input, events[:300] + [(b"x", b"bad json")])
    prometheus = subprocess.Popen(
        [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{prom_port}"
    try:
        async with running_service(service_config(
            kafka_bootstrap, topics, mode="auto", metrics_port=metrics_port, metrics_bind="127.0.0.1"
        )):
            await read(kafka_bootstrap, topics.output, 300, settle=0.2)
            await produce(kafka_bootstrap, topics.input, events[300:])  # load while scraped
            await read(kafka_bootstrap, topics.output, len(events), settle=0.2)
            up = await _wait_for_scrapes(base)
            assert up, "Prometheus never scraped the service"
            exported = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()

            failures = []
            for expr in expressions():
                result = api(base, "/api/v1/query", query=expr)
                if result.get("status") != "success":
                    failures.append(f"{expr!r}: {result.get('error')}")
            assert not failures, "\n".join(failures)

            rules = api(base, "/api/v1/rules")["data"]["groups"][0]["rules"]
            written = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
            assert len(rules) == len(written) and all(r["health"] == "ok" for r in rules), rules
            answered = api(base, "/api/v1/query", query="sum(pba_predictions_total)")
            assert float(answered["data"]["result"][0]["value"][1]) >= 300

    finally:
        prometheus.terminate()
        prometheus.wait(20)

    exported_names = set(re.findall(r"^(pba_[a-z0-9_]+)", exported, re.MULTILINE))
    missing = {
        name for expr in expressions() for name in re.findall(r"\bpba_[a-z0-9_]+", expr)
        if name not in exported_names
    }
    assert not missing, f"expressions name metrics the service does not export: {sorted(missing)}"


async def _wait_for_scrapes(base: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = api(base, "/api/v1/query", query="count_over_time(up[30s])")
            values = result.get("data", {}).get("result", [])
            if values and float(values[0]["value"][1]) >= 3:
                return True
        except OSError:
            pass
        await asyncio.sleep(0.5)
    return False
