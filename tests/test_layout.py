"""The house rules a newcomer relies on: consumer/ is the service, the companion tools
have consumer/tools/, the service never loads training code, and no module grows past
what one person reads in a sitting."""

from __future__ import annotations

import ast
import asyncio
import re
import signal
from pathlib import Path

import pytest
from kafka_support import Topics, link_events, produce, read, repo_root, service_process, service_stderr

ROOT = repo_root()
SOURCE_DIRS = ("schemas", "predictor", "consumer", "training", "examples", "scripts")
MAX_LINES = 400
#: the only doors from the service's package to the tools, each opened by a command:
#: the command line dispatches to them, `pba run --embedded-broker` starts the broker
TOOL_DOORS = {"consumer/cli.py": {"consumer.tools"}, "consumer/run.py": {"consumer.tools.broker"}}


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def service_modules() -> list[Path]:
    return sorted(p for p in (ROOT / "consumer").glob("*.py"))


def test_no_source_module_is_over_400_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py")}
    assert len(sizes) > 50  # the walk found the code
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


def test_the_service_package_imports_no_training_code_and_no_tool_but_through_its_doors() -> None:
    assert len(service_modules()) > 20
    for path in service_modules():
        name = str(path.relative_to(ROOT))
        modules = imported_modules(path)
        assert not {m for m in modules if m.split(".")[0] in ("training", "torch")}, name
        tools = {m for m in modules if m.startswith("consumer.tools")}
        assert tools <= TOOL_DOORS.get(name, set()), name


def test_predictor_and_schemas_import_nothing_of_the_service_or_training() -> None:
    for package in ("predictor", "schemas"):
        for path in (ROOT / package).rglob("*.py"):
            roots = {m.split(".")[0] for m in imported_modules(path)}
            assert not roots & {"consumer", "training", "torch", "aiokafka", "asyncio"}, path


@pytest.mark.integration
def test_a_running_service_loads_no_training_torch_or_tool_module(kafka_bootstrap: str,
                                                                  topics: Topics) -> None:
    """Not what the source says but what `pba run` loads: Python's own import log
    (PYTHONPROFILEIMPORTTIME) of a service in auto mode that published model predictions
    and a dead letter."""
    events = link_events(2, 70)  # past the internet window: the model serves
    asyncio.run(produce(kafka_bootstrap, topics.input, [*events, (b"bad", b"{not json")]))
    with service_process(kafka_bootstrap, topics, "--mode", "auto",
                         env={"PYTHONPROFILEIMPORTTIME": "1"}) as proc:
        out = asyncio.run(read(kafka_bootstrap, topics.output, len(events), timeout=90))
        assert sum(b'"source":"model"' in r.value for r in out) > 0
        asyncio.run(read(kafka_bootstrap, topics.dlq, 1, timeout=30))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log = service_stderr(proc)
    names = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", log, re.MULTILINE))
    assert {"consumer.service", "consumer.dead_letters", "onnxruntime"} <= names
    assert not {m for m in names if m.split(".")[0] in ("training", "torch")}
    assert not {m for m in names if m.startswith("consumer.tools")}


def test_every_command_the_cli_hands_to_the_tools_exists_there() -> None:
    from consumer.tools import commands

    named = re.findall(r'_tool\("(\w+)"\)', (ROOT / "consumer" / "cli.py").read_text())
    assert len(named) == 7
    assert [name for name in named if not callable(getattr(commands, name, None))] == []
