"""The `pba` command line as a person meets it: its version, -v and -vv on either side of
the command, the choices in the help, and errors in words."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from importlib.metadata import version

import pytest

pytestmark = pytest.mark.integration

PBA = [sys.executable, "-m", "consumer.cli"]


def pba(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PBA, *args], capture_output=True, text=True, timeout=60)


def test_version_names_the_installed_package() -> None:
    done = pba("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"pba {version('pba-stream')}"


def stderr_until(args: list[str], marker: str, seconds: float = 60) -> list[str]:
    """What `pba ARGS` writes to stderr up to its first line holding `marker`."""
    proc = subprocess.Popen([*PBA, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("PBA_")})
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not any(marker in line for line in lines[-1:]):
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert any(marker in line for line in lines), f"no {marker!r} in {lines}"
    return lines


RUN = ["--embedded-broker", "--metrics-port", "0", "--mode", "datacenter"]


@pytest.mark.parametrize("args", [
    ["-vv", "run"], ["run", "-vv"], ["-v", "run", "-v"], ["run", "-v"],
], ids=["before", "after", "both", "one-after"])
def test_v_lowers_the_log_level_before_or_after_the_command(args: list[str]) -> None:
    """pba run logs INFO by default; each -v one level more, wherever it is written."""
    lines = stderr_until([*args, *RUN], "starting embedded broker")
    assert "level=DEBUG" in lines[-1]


def test_without_v_pba_run_writes_no_debug_line() -> None:
    lines = stderr_until(["run", *RUN], "assigned ")  # ready: past the broker's start and the join
    assert not [line for line in lines if "level=DEBUG" in line]


def test_the_help_shows_the_choices_of_a_setting() -> None:
    text = " ".join(pba("run", "--help").stdout.split())
    assert "--mode {auto,hybrid,datacenter,internet}" in text
    assert "--precision {float,int8}" in text and "--start-at {earliest,latest}" in text


def test_a_number_given_in_words_is_refused_in_words() -> None:
    done = pba("run", "--bootstrap", "k:9092", "--metrics-port", "abc", "--idle-evict-s", "soon")
    assert done.returncode == 2
    assert "metrics_port (--metrics-port): 'abc' is not a whole number" in done.stderr
    assert "idle_evict_s (--idle-evict-s): 'soon' is not a number" in done.stderr
    assert "invalid literal" not in done.stderr and "could not convert" not in done.stderr
