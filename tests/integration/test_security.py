"""TLS to the broker with certificate verification, for real: Debian's stunnel4 accepts
TLS in front of the embedded broker (whose own TLS options do not work in the shipped
build), which advertises the TLS port. A test CA and server certificate are made here with
openssl. Secrets given to the service never show in its logs or /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiokafka.helpers import create_ssl_context
from kafka_support import (
    Topics,
    free_port,
    produce,
    read,
    ready_now,
    seconds_until_ready,
    service_process,
    service_stderr,
)

from consumer.tools.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


@dataclass
class TlsBroker:
    bootstrap: str  # the TLS port
    ca: Path  # the CA that signed the server certificate
    other_ca: Path  # a CA that did not


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN=pba test {name}"],
                   check=True, capture_output=True)
    return key, cert


def make_server_cert(directory: Path, ca_key: Path, ca_cert: Path) -> tuple[Path, Path]:
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                    "-subj", "/CN=localhost"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                    "-CAcreateserial", "-days", "1", "-out", str(cert), "-extfile", str(extensions)],
                   check=True, capture_output=True)
    return key, cert


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    assert stunnel, "stunnel4 is missing: `make test` installs it (Debian package stunnel4)"
    ca_key, ca = make_ca(tmp_path, "ca")
    _, other_ca = make_ca(tmp_path, "other-ca")
    key, cert = make_server_cert(tmp_path, ca_key, ca)
    tls_port = free_port()
    with EmbeddedBroker(advertised_port=tls_port) as broker:
        config = tmp_path / "stunnel.conf"
        config.write_text(f"foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tls_port}\n"
                          f"connect = 127.0.0.1:{broker.port}\ncert = {cert}\nkey = {key}\n")
        terminator = subprocess.Popen([stunnel, str(config)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        try:
            wait_listening(tls_port)
            yield TlsBroker(f"127.0.0.1:{tls_port}", ca, other_ca)
        finally:
            terminator.send_signal(signal.SIGTERM)
            terminator.wait(10)


def test_the_service_works_over_tls_with_the_certificate_verified(tls_broker: TlsBroker,
                                                                  topics: Topics) -> None:
    tls = {"security_protocol": "SSL", "ssl_context": create_ssl_context(cafile=str(tls_broker.ca))}
    events = [(b"a", orjson.dumps({"link_id": "a", "ts": 100 + i, "bandwidth_mbps": 10.0 + i}))
              for i in range(40)]
    asyncio.run(produce(tls_broker.bootstrap, topics.input, events, **tls))
    port = free_port()
    with service_process(tls_broker.bootstrap, topics, "--mode", "datacenter", "--metrics-port", str(port),
                         "--security-protocol", "SSL", "--ssl-cafile", str(tls_broker.ca)) as proc:
        seconds_until_ready(port, 60, proc)
        out = asyncio.run(read(tls_broker.bootstrap, topics.output, len(events), timeout=60, settle=0.5,
                               **tls))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert sorted(orjson.loads(r.value)["ts"] for r in out) == [100 + i for i in range(40)]


def test_a_broker_certificate_from_an_untrusted_ca_is_refused(tls_broker: TlsBroker, topics: Topics) -> None:
    port = free_port()
    with service_process(tls_broker.bootstrap, topics, "--mode", "datacenter", "--metrics-port", str(port),
                         "--security-protocol", "SSL", "--ssl-cafile", str(tls_broker.other_ca)) as proc:
        time.sleep(6)
        assert proc.poll() is None, "the service should keep retrying, not exit"
        assert not ready_now(port)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        stderr = service_stderr(proc)
    assert "cannot reach Kafka" in stderr and "retrying" in stderr


def test_a_sasl_password_never_shows_in_logs_or_metrics(tls_broker: TlsBroker, topics: Topics) -> None:
    """The broker here does not speak SASL, so the service fails to log in and says so,
    at debug level too, without ever printing the password."""
    secret = "s3cret-never-logged-42"
    port = free_port()
    with service_process(tls_broker.bootstrap, topics, "--mode", "datacenter", "--metrics-port", str(port),
                         "--security-protocol", "SASL_SSL", "--ssl-cafile", str(tls_broker.ca),
                         "--sasl-mechanism", "SCRAM-SHA-256", "--sasl-username", "svc",
                         "--sasl-password", secret, "--log-level", "DEBUG") as proc:
        time.sleep(6)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        stderr = service_stderr(proc)
    assert "sasl_password" in stderr and "***" in stderr  # the start-up line names it, redacted
    assert secret not in stderr and secret not in metrics


def pba(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consumer.cli", *args], capture_output=True, text=True,
                          timeout=60)


def test_simulate_agent_and_tail_reach_a_tls_broker_with_the_connection_settings_of_pba_run(
    tls_broker: TlsBroker, topics: Topics, tmp_path: Path
) -> None:
    """One connection config for every command: the same flags, environment and TOML
    file as `pba run`. Here the tools publish and read through the TLS terminator, the
    CA given by flag to two of them and in a config file shared with `pba run` to tail."""
    tls = ("--bootstrap", tls_broker.bootstrap, "--security-protocol", "SSL",
           "--ssl-cafile", str(tls_broker.ca))
    done = pba("simulate", *tls, "--topic", topics.input, "--links", "3", "--rate", "30",
               "--duration", "1", "-q")
    assert done.returncode == 0, done.stderr
    done = pba("agent", *tls, "--topic", topics.input, "--interface", "lo", "--interval", "0.2", "--once")
    assert done.returncode == 0, done.stderr
    agent_event = orjson.loads(done.stdout)
    shared = tmp_path / "pba.toml"  # pba run's file: its other settings are fine here
    shared.write_text(f'mode = "datacenter"\n[pba]\nsecurity_protocol = "SSL"\n'
                      f'ssl_cafile = "{tls_broker.ca}"\n')
    published = asyncio.run(read(tls_broker.bootstrap, topics.input, 10**6, timeout=10, settle=1,
                                 security_protocol="SSL",
                                 ssl_context=create_ssl_context(cafile=str(tls_broker.ca))))
    done = pba("tail", "--config", str(shared), "--bootstrap", tls_broker.bootstrap, "--topic", topics.input,
               "--from-beginning", "--json", "--max-messages", str(len(published)))
    assert done.returncode == 0, done.stderr
    links = {orjson.loads(line)["link_id"] for line in done.stdout.splitlines()}
    assert agent_event["link_id"] in links and len(links) == 4  # three simulated links and the agent's
    untrusted = pba("tail", "--bootstrap", tls_broker.bootstrap, "--security-protocol", "SSL",
                    "--ssl-cafile", str(tls_broker.other_ca), "--topic", topics.input, "--max-messages", "1")
    assert untrusted.returncode == 2 and "Traceback" not in untrusted.stderr, untrusted.stderr
