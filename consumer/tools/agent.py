"""`pba agent`: measure this host's link and publish one metric event per interval.

Throughput comes from the interface's byte counters (/sys/class/net/IF/statistics),
capacity from /sys/class/net/IF/speed where the driver reports one. RTT, jitter and loss
come from timing TCP connects to a peer (no root needed): latency is the median connect
time, jitter their standard deviation, loss the share of attempts that failed.
The event's bandwidth is the capacity when known, else the measured throughput.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

SYS_NET = Path("/sys/class/net")
PROBES = 5
PROBE_TIMEOUT_S = 1.0


class AgentError(RuntimeError):
    """Something the operator must fix (unknown interface, unreachable peer)."""


@dataclass(frozen=True)
class Peer:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Peer:
        host, sep, port = text.rpartition(":")
        if not sep:
            return cls(text, 22)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise AgentError(f"peer {text!r}: port must be 1..65535")
        return cls(host.strip("[]"), int(port))


def interface_dir(interface: str, root: Path = SYS_NET) -> Path:
    path = root / interface
    if not path.is_dir():
        known = ", ".join(sorted(p.name for p in root.iterdir())) if root.is_dir() else "none"
        raise AgentError(f"unknown interface {interface!r}; this host has: {known}")
    return path


def read_bytes(path: Path) -> int:
    stats = path / "statistics"
    return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())


def capacity_mbps(path: Path) -> float | None:
    """Link speed the driver reports (Mbit/s); None for loopback, virtual or down links."""
    try:
        speed = int((path / "speed").read_text().strip())
    except (OSError, ValueError):
        return None
    return float(speed) if speed > 0 else None


def probe(peer: Peer, attempts: int = PROBES, timeout: float = PROBE_TIMEOUT_S) -> tuple[float, float, float]:
    """(median RTT ms, jitter ms, loss fraction) from timed TCP connects."""
    times = []
    for _ in range(attempts):
        started = time.perf_counter()
        try:
            with socket.create_connection((peer.host, peer.port), timeout=timeout):
                times.append((time.perf_counter() - started) * 1000.0)
        except OSError:
            continue
    loss = 1.0 - len(times) / attempts
    if not times:
        return float("nan"), float("nan"), loss
    jitter = statistics.pstdev(times) if len(times) > 1 else 0.0
    return statistics.median(times), jitter, loss


def check_peer(peer: Peer) -> None:
    try:
        with socket.create_connection((peer.host, peer.port), timeout=PROBE_TIMEOUT_S * 2):
            return
    except OSError as exc:
        raise AgentError(f"peer {peer.host}:{peer.port} is unreachable ({exc}); give --peer a host "
                         "and a TCP port that accepts connections") from None


@dataclass
class Agent:
    interface: str
    peer: Peer | None
    interval: float
    link_id: str

    def __post_init__(self) -> None:
        self.path = interface_dir(self.interface)
        if self.peer is not None:
            check_peer(self.peer)
        self._last = (time.monotonic(), read_bytes(self.path))

    def measure(self) -> dict[str, object]:
        now, counted = time.monotonic(), read_bytes(self.path)
        then, before = self._last
        self._last = (now, counted)
        throughput = max(0, counted - before) * 8 / 1e6 / max(now - then, 1e-6)
        event: dict[str, object] = {
            "link_id": self.link_id,
            "ts": round(time.time(), 3),
            "bandwidth_mbps": capacity_mbps(self.path) or round(throughput, 6),
            "throughput_mbps": round(throughput, 6),
            "node_id": socket.gethostname(),
        }
        if self.peer is not None:
            rtt, jitter, loss = probe(self.peer)
            event["packet_loss"] = loss
            event["peer_id"] = f"{self.peer.host}:{self.peer.port}"
            if rtt == rtt:  # not NaN: at least one connect succeeded
                event["latency_ms"] = round(rtt, 3)
                event["jitter_ms"] = round(jitter, 3)
        return event


def default_link_id(interface: str, peer: Peer | None) -> str:
    base = f"{socket.gethostname()}:{interface}"
    return f"{base}->{peer.host}" if peer else base


async def run_agent(agent: Agent, bootstrap: str, topic: str, once: bool = False,
                    stop: asyncio.Event | None = None, security: dict[str, object] | None = None) -> int:
    """Publish one event per interval (the first after one interval of counting)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **(security or {}))
    sent = 0
    try:
        await producer.start()
        while stop is None or not stop.is_set():
            if stop is None:
                await asyncio.sleep(agent.interval)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), agent.interval)
                    break
                except TimeoutError:
                    pass
            event = await asyncio.get_running_loop().run_in_executor(None, agent.measure)
            await producer.send_and_wait(topic, orjson.dumps(event), key=agent.link_id.encode())
            sent += 1
            if once:
                print(orjson.dumps(event).decode(), flush=True)
                break
    finally:
        await producer.stop()
    return sent

