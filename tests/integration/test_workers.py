"""`pba run --workers 2` against the real broker: two members of one group in one command,
each with its own metrics endpoint; together they predict every event once; SIGTERM drains
both and commits; SIGHUP reaches both; one worker dying stops the unit with its status."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from kafka_support import (
    Topics,
    committed_total,
    link_events,
    predictions,
    produce,
    read,
    seconds_until_ready,
    service_process,
    service_stderr,
)
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration


def two_free_ports() -> int:
    """A port p with p + 1 free too: worker i listens on metrics_port + i."""
    for _ in range(50):
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(contextlib.closing(socket.socket()))
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            second = stack.enter_context(contextlib.closing(socket.socket()))
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free ports")


def predicted(port: int) -> float:
    """pba_predictions_total over every label, from a worker's own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) if family.name == "pba_predictions"
               for s in family.samples if s.name == "pba_predictions_total")


def wait_for(condition, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@contextlib.contextmanager
def two_workers(bootstrap: str, topics: Topics,
                events: list[tuple[bytes, bytes]]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The events in the input, then `pba run --workers 2` on them, both workers ready:
    the process and the first worker's metrics port."""
    asyncio.run(produce(bootstrap, topics.input, events))
    port = two_free_ports()
    with service_process(bootstrap, topics, "--mode", "internet", "--workers", "2",
                         "--metrics-port", str(port)) as proc:
        for each in (port, port + 1):
            seconds_until_ready(each, 90, proc)
        yield proc, port


def test_two_workers_share_the_partitions_predict_everything_once_and_drain_on_sigterm(
    kafka_bootstrap: str, topics: Topics
) -> None:
    events = link_events(16, 30)  # 16 links over 4 partitions: both members get some
    with two_workers(kafka_bootstrap, topics, events) as (proc, port):
        out = asyncio.run(read(kafka_bootstrap, topics.output, len(events), timeout=90, settle=0.5))
        by_worker = [predicted(port), predicted(port + 1)]
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: service_stderr(proc).count("models reloaded") == 2, 30,
                 f"SIGHUP did not reach both workers:\n{service_stderr(proc, 3000)}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0, service_stderr(proc, 3000)
        lines = service_stderr(proc)
    preds = predictions(out)
    assert len({(p["link_id"], p["ts"]) for p in preds}) == len(events) == len(preds)
    assert all(n > 0 for n in by_worker), f"a worker got no partitions: {by_worker}"
    assert sum(by_worker) == len(events)
    assert {m for m in re.findall(r"models reloaded.* worker=(\d)", lines)} == {"0", "1"}
    # both drained: every offset is committed
    assert asyncio.run(committed_total(kafka_bootstrap, topics.input, topics.group)) == len(events)


def test_a_worker_that_dies_stops_the_other_and_the_command_fails_naming_it(
    kafka_bootstrap: str, topics: Topics
) -> None:
    with two_workers(kafka_bootstrap, topics, link_events(4, 5)) as (proc, _):
        pids = dict(re.findall(r"worker started' worker=(\d) pid=(\d+)", service_stderr(proc)))
        assert set(pids) == {"0", "1"}
        os.kill(int(pids["1"]), signal.SIGKILL)
        assert proc.wait(40) == 1
        lines = service_stderr(proc)
    assert "worker exited on its own; stopping the others' worker=1 exit_code=-9" in lines
    assert re.search(r"logger=consumer.run msg='stopped' worker=0", lines), "worker 0 was not drained"
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(pids["0"]), 0)
        raise AssertionError("worker 0 is still running")


def running(pid: int) -> bool:
    """Whether pid is a live process (a zombie nobody reaped has stopped all the same)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_whose_supervisor_is_killed_outright_drain_and_stop(
    kafka_bootstrap: str, topics: Topics
) -> None:
    events = link_events(8, 30)
    with two_workers(kafka_bootstrap, topics, events) as (proc, _):
        asyncio.run(read(kafka_bootstrap, topics.output, len(events), timeout=90))
        pids = [int(pid) for pid in re.findall(r"worker started' worker=\d pid=(\d+)", service_stderr(proc))]
        assert len(pids) == 2 and all(running(pid) for pid in pids)
        proc.send_signal(signal.SIGKILL)  # no signal forwarded: the workers find out themselves
        wait_for(lambda: not any(running(pid) for pid in pids), 40,
                 f"orphaned workers still run:\n{service_stderr(proc, 3000)}")
        lines = service_stderr(proc)
    assert lines.count("the supervisor is gone; stopping") == 2
    assert len(re.findall(r"logger=consumer.run msg='stopped' worker=\d", lines)) == 2
    # they drained as on SIGTERM: every offset is committed
    assert asyncio.run(committed_total(kafka_bootstrap, topics.input, topics.group)) == len(events)
