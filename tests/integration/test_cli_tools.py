"""Both ends of the pipe: `pba simulate`, `pba agent`, `pba tail` and the demo, on the
embedded broker, through their command lines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from kafka_support import Topics, produce, read, service_process

from predictor.linkstate import ADAPTATION_HEADER
from schemas import EVENT_SCHEMA_PATH
from training.traces import read_trace

pytestmark = pytest.mark.integration


def pba(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consumer.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def event_schema() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        json.loads(EVENT_SCHEMA_PATH.read_text()),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def test_simulate_publishes_about_rate_times_duration_valid_events_over_n_links(
    kafka_bootstrap: str, topic: str, event_schema: jsonschema.Draft202012Validator
) -> None:
    started = time.monotonic()
    done = pba("simulate", "--bootstrap", kafka_bootstrap, "--topic", topic, "--links", "20",
               "--rate", "200", "--duration", "5")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "1000/1000 events (0 bad) over 20 links" in done.stderr
    assert 4.5 < elapsed < 20
    records = asyncio.run(read(kafka_bootstrap, topic, 1000, settle=1.0))
    assert len(records) == 1000
    links = set()
    for r in records:
        event = orjson.loads(r.value)
        event_schema.validate(event)
        assert r.key == event["link_id"].encode()
        links.add(event["link_id"])
    assert len(links) == 20


def test_simulate_replays_real_traces_rescaled_and_mixes_in_bad_events(
    kafka_bootstrap: str, topic: str, sample_traces: list[Path],
    event_schema: jsonschema.Draft202012Validator, tmp_path: Path,
) -> None:
    folder = tmp_path / "traces"
    folder.mkdir()
    source = sample_traces[0]
    (folder / source.name).write_text(source.read_text())
    done = pba("simulate", "--bootstrap", kafka_bootstrap, "--topic", topic, "--links", "1",
               "--rate", "100", "--duration", "2", "--traces", str(folder), "--scale", "2",
               "--bad-rate", "0.2", "-q")
    assert done.returncode == 0, done.stderr
    records = asyncio.run(read(kafka_bootstrap, topic, 200, settle=0.5))
    valid = []
    for r in records:
        try:
            event = orjson.loads(r.value)
            event_schema.validate(event)
            valid.append(event)
        except (orjson.JSONDecodeError, jsonschema.ValidationError):
            continue
    assert 100 < len(valid) < 200, "about a fifth should be bad"
    expected = read_trace(source).values[:, 0] * 2
    first = valid[0]
    assert any(abs(first["bandwidth_mbps"] - v) < 1e-3 * max(v, 1) for v in expected[:5])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--links", "0"], "--links must be at least 1"),
        (["--rate", "-1"], "--rate must be > 0"),
        (["--bad-rate", "2"], "--bad-rate must be a fraction"),
        (["--traces", "/nonexistent"], "does not exist"),
    ],
)
def test_simulate_argument_errors_are_clear(kafka_bootstrap: str, args: list[str], message: str) -> None:
    done = pba("simulate", "--bootstrap", kafka_bootstrap, *args)
    assert done.returncode == 2 and message in done.stderr


def test_a_simulation_too_short_for_the_models_says_so_and_how_long_would_do(kafka_bootstrap: str,
                                                                            topic: str) -> None:
    short = pba("simulate", "--bootstrap", kafka_bootstrap, "--topic", topic, "--links", "20", "--rate", "40",
                "--duration", "1")
    assert short.returncode == 0, short.stderr
    assert "each link gets 2 samples in this run" in short.stderr and "--duration 5 " in short.stderr
    enough = pba("simulate", "--bootstrap", kafka_bootstrap, "--topic", topic, "--links", "2",
                 "--rate", "200", "--duration", "1")
    assert enough.returncode == 0 and "note:" not in enough.stderr


def test_simulate_without_a_broker_address_says_how_to_give_one() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PBA_KAFKA_BOOTSTRAP"}
    done = subprocess.run([sys.executable, "-m", "consumer.cli", "simulate"], capture_output=True,
                          text=True, env=env, timeout=30)
    assert done.returncode != 0 and "--bootstrap" in done.stderr


@pytest.mark.parametrize("tool", [
    ["simulate", "--links", "2", "--rate", "2", "--duration", "1"],
    ["tail"],
    ["agent", "--interface", "lo", "--once"],
])
def test_tools_facing_no_broker_exit_2_with_the_reason_and_nothing_left_open(tool: list[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    done = pba(tool[0], "--bootstrap", f"127.0.0.1:{closed_port}", *tool[1:])
    assert done.returncode == 2, done.stderr
    assert f"pba {tool[0]}: " in done.stderr and "KafkaConnectionError" in done.stderr
    assert "Unclosed" not in done.stderr and "Traceback" not in done.stderr


def fake_prediction(i: int, link: str) -> bytes:
    return orjson.dumps({
        "prediction_id": f"{i:032x}", "link_id": link, "ts": time.time() - 2, "horizon_s": 1.0,
        "valid_until": time.time(), "predicted_bandwidth_mbps": 1500.0 + i, "reserve_mbps": 1200.0,
        "confidence": 0.9, "mode": "datacenter", "model_version": "test", "source": "model",
        "inference_ms": 1.0, "shadow": False,
        "allocation": {"streams": 10, "buffer_bytes": 16384, "chunk_bytes": 8192,
                       "pacing_bytes_per_s": 1.0, "window_bytes": 1, "action": "apply"},
    })


async def produce_with_adaptation_headers(bootstrap: str, topic: str,
                                          messages: list[tuple[bytes, bytes]]) -> None:
    """As the service publishes the models' predictions: each with its link's adaptation
    state in a pba.* header (which once made the tail take them for dead letters)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key, headers=[(ADAPTATION_HEADER, bytes(45))])
    finally:
        await producer.stop()


def test_tail_prints_json_lines_a_table_and_filters_by_link(kafka_bootstrap: str, topic: str) -> None:
    messages = [(f"l{i % 3}".encode(), fake_prediction(i, f"l{i % 3}")) for i in range(60)]
    asyncio.run(produce_with_adaptation_headers(kafka_bootstrap, topic, messages))
    done = pba("tail", "--bootstrap", kafka_bootstrap, "--topic", topic, "--json", "--from-beginning",
               "--max-messages", "50")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 50 and all(orjson.loads(line)["prediction_id"] for line in lines)
    assert not any("dead_letter" in orjson.loads(line) for line in lines)

    table = pba("tail", "--bootstrap", kafka_bootstrap, "--topic", topic, "--from-beginning",
                "--max-messages", "5", "--link", "l1")
    rows = table.stdout.splitlines()
    assert rows[0].split()[:4] == ["link", "mode", "source", "predicted"]
    assert len(rows) == 6 and all(r.startswith("l1 ") for r in rows[1:])
    assert "1.50 Gb/s" in rows[1] and "apply" in rows[1]


def test_tail_reads_the_input_and_the_dead_letters_with_their_error_headers(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """The dead letters come from a real service; a value that is no event (ts
    "yesterday") used to stop the tail with a ValueError."""
    good = [(b"a", orjson.dumps({"link_id": "a", "ts": 100 + i, "bandwidth_mbps": 1200.0 + i,
                                 "latency_ms": 0.4, "packet_loss": 0.001})) for i in range(8)]
    bad = [(b"b", b'{"link_id": "b", "ts": "yesterday", "bandwidth_mbps": 10}'), (b"c", b"not json")]
    asyncio.run(produce(kafka_bootstrap, topics.input, good + bad))
    with service_process(kafka_bootstrap, topics, "--mode", "datacenter") as proc:
        asyncio.run(read(kafka_bootstrap, topics.dlq, 2, timeout=60))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    where = ("--bootstrap", kafka_bootstrap, "--from-beginning")
    dead = pba("tail", *where, "--topic", topics.dlq, "--max-messages", "2")
    assert dead.returncode == 0 and "Traceback" not in dead.stderr, dead.stderr
    header, *rows = dead.stdout.splitlines()  # the partitions' order is the broker's: by key below
    assert header.split()[:3] == ["dead", "letter", "reason"]
    row = {line.split()[0]: line for line in rows}
    assert "bad_timestamp" in row["b"] and f"({topics.input}[" in row["b"]
    assert "invalid_json" in row["c"]
    as_json = {(d := orjson.loads(line))["key"]: d for line in pba(
        "tail", *where, "--topic", topics.dlq, "--json", "--max-messages", "2").stdout.splitlines()}
    assert as_json["b"]["value"] == bad[0][1].decode()
    assert as_json["b"]["dead_letter"]["error.reason"] == "bad_timestamp"
    assert as_json["c"]["dead_letter"]["source.offset"].isdigit()
    lines = pba("tail", *where, "--topic", topics.input, "--max-messages", "10").stdout.splitlines()
    assert ["link", "bandwidth", "latency", "loss", "age"] in [line.split() for line in lines]
    assert any("1.20 Gb/s" in line and "0.4 ms" in line and "0.10%" in line for line in lines)
    assert any(line.split()[:2] == ["b", "10.0"] and line.split()[-1] == "?" for line in lines)  # its ts
    assert "unreadable record" in lines and "c                            'not json'" in lines


def test_tail_into_a_closed_pipe_ends_quietly(kafka_bootstrap: str, topic: str) -> None:
    """`pba tail | head`: far more than a pipe holds, and the reader gone after a line."""
    asyncio.run(produce(kafka_bootstrap, topic, [(b"l", fake_prediction(i, "l")) for i in range(4000)]))
    proc = subprocess.Popen([sys.executable, "-m", "consumer.cli", "tail", "--bootstrap", kafka_bootstrap,
                             "--topic", topic, "--from-beginning", "--max-messages", "4000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().split()[0] == b"link"
    proc.stdout.close()
    assert proc.wait(60) == 0
    assert proc.stderr.read() == b""


@pytest.fixture
def local_peer() -> Iterator[int]:
    """A TCP server on loopback accepting connections (the agent's RTT peer)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    running = True

    def accept() -> None:
        while running:
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    running = False
    thread.join(2)
    server.close()


def test_agent_measures_loopback_against_a_local_peer(
    kafka_bootstrap: str, topic: str, local_peer: int, event_schema: jsonschema.Draft202012Validator
) -> None:
    done = pba("agent", "--bootstrap", kafka_bootstrap, "--topic", topic, "--interface", "lo",
               "--peer", f"127.0.0.1:{local_peer}", "--interval", "0.3", "--once", "--link-id", "lo-test")
    assert done.returncode == 0, done.stderr
    printed = orjson.loads(done.stdout.splitlines()[-1])
    records = asyncio.run(read(kafka_bootstrap, topic, 1, settle=0.2))
    published = orjson.loads(records[0].value)
    assert published == printed
    event_schema.validate(published)
    assert published["link_id"] == "lo-test" and records[0].key == b"lo-test"
    assert 0 <= published["latency_ms"] < 100 and published["packet_loss"] == 0.0
    assert published["throughput_mbps"] >= 0 and published["peer_id"].endswith(str(local_peer))


def test_agent_errors_name_the_interface_or_peer(kafka_bootstrap: str) -> None:
    unknown = pba("agent", "--bootstrap", kafka_bootstrap, "--interface", "nosuch0", "--once")
    assert unknown.returncode == 2
    assert "unknown interface 'nosuch0'" in unknown.stderr and "lo" in unknown.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    unreachable = pba("agent", "--bootstrap", kafka_bootstrap, "--interface", "lo",
                      "--peer", f"127.0.0.1:{closed_port}", "--once")
    assert unreachable.returncode == 2 and "is unreachable" in unreachable.stderr


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        path = Path(f"/proc/{parent}/task/{parent}/children")
        for child in path.read_text().split() if path.exists() else []:
            found.add(int(child))
            frontier.append(int(child))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_demo_shows_predictions_and_ctrl_c_leaves_nothing_running(traces_dir: Path) -> None:
    """Not on a terminal: plain lines, model predictions within the first minute."""
    proc = subprocess.Popen([sys.executable, "-m", "consumer.tools.demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PBA_TRACES_DIR": str(traces_dir)})
    assert proc.stdout is not None
    lines: list[str] = []
    children: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        children |= _descendants(proc.pid)
        if sum(" model " in x for x in lines) >= 5:
            break
    assert sum(" model " in x for x in lines) >= 5, "".join(lines[-20:])
    assert any("broker:" in x for x in lines) and any(" fallback " in x for x in lines)
    children |= _descendants(proc.pid)
    assert len(children) >= 3  # broker, service, simulators
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "demo stopped; nothing left running." in rest
    time.sleep(0.5)
    assert not [pid for pid in children if _alive(pid)], "processes left behind"


def test_demo_on_a_terminal_updates_a_table_in_place_with_the_running_figures(traces_dir: Path) -> None:
    """On a terminal (a pseudo-terminal here) the demo redraws one table instead of
    scrolling: each link's row, and the hit rate against the last value, dead letters
    and lag, with model predictions within the first minute."""
    import fcntl
    import pty
    import re
    import select
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    # the size of the terminal, also as the variables that win over it (pytest sets COLUMNS)
    proc = subprocess.Popen([sys.executable, "-m", "consumer.tools.demo"], stdin=follower, stdout=follower,
                            stderr=follower, env={**os.environ, "PBA_TRACES_DIR": str(traces_dir),
                                                  "COLUMNS": "250", "LINES": "50"})
    os.close(follower)
    shown = b""

    def read_for(seconds: float) -> None:
        nonlocal shown
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    shown += os.read(leader, 1 << 16)
                except OSError:  # the demo closed its end
                    return

    summary = re.compile(rb"(\d+) links, [\d,]+ predictions, (\d+) % from the models; within\s+\+/-20\s+%:"
                         rb"\s+model\s+[\d.]+\s+%,\s+last\s+value\s+[\d.]+\s+%\s+of\s+[\d,]+\s+scored;"
                         rb"\s+dead\s+letters\s+\d+")  # \s: a narrower terminal wraps the line
    try:
        started = time.monotonic()
        while time.monotonic() - started < 60 and not any(  # every link in, some served by the models
                int(m.group(1)) >= 12 and int(m.group(2)) > 0 for m in summary.finditer(shown)):
            read_for(1)
        figures = [m for m in summary.finditer(shown)]
        assert figures and int(figures[-1].group(2)) > 0, shown[-3000:].decode(errors="replace")
        assert b"\x1b[" in shown, "no terminal control: the table was not redrawn in place"
        assert len(figures) > 5 and int(figures[-1].group(1)) >= 12
        proc.send_signal(signal.SIGINT)
        read_for(15)
        assert proc.wait(30) == 0
        assert b"demo stopped; nothing left running." in shown
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
