"""`make demo`: the whole loop on one machine, stopped cleanly with Ctrl-C.

Starts the embedded broker, `pba run` against it, a mixed-regime `pba simulate` (real
traces from ../shared/traces mixed in when present, and a few bad events for the
dead-letter path), and shows the predictions: on a terminal as a table updated in place
(demo_view.py: each link's latest prediction, the running hit rate against the last
value, dead letters and lag), otherwise as `pba tail`'s plain lines. Every child is tied
to this process (PR_SET_PDEATHSIG), so nothing outlives it, not even a kill -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from consumer.tools.broker import EmbeddedBroker, die_with_parent, free_port, stop_processes
from consumer.tools.tail import tail
from consumer.topics import ensure_topics
from predictor.modes import MODEL_MIN_SAMPLES
from schemas import DEAD_LETTERS_TOPIC, METRICS_TOPIC, PREDICTIONS_TOPIC
from training.traces import default_traces_dir

# the demo runs pba run with its default topics
TOPICS = INPUT, PREDICTIONS, DEAD_LETTERS = METRICS_TOPIC, PREDICTIONS_TOPIC, DEAD_LETTERS_TOPIC



def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", *args],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the demo only; it stops children in order
        preexec_fn=die_with_parent,  # noqa: PLW1509 - Linux only, before exec
    )


def main() -> int:
    print("PBA stream demo: embedded broker, service, simulator, live predictions. "
          "Ctrl-C stops it all.\n", flush=True)
    # Ctrl-C must reach our cleanup, not interrupt it: handled as an event from here on.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    children: list[subprocess.Popen[bytes]] = []
    try:
        with EmbeddedBroker() as broker:
            try:
                asyncio.run(_demo(broker.bootstrap, children))
            finally:
                print("\nstopping ...", flush=True)
                stop_processes(children, 15)
    finally:
        signal.signal(signal.SIGINT, previous)
    print("demo stopped; nothing left running.", flush=True)
    return 0


async def _demo(bootstrap: str, children: list[subprocess.Popen[bytes]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await ensure_topics(bootstrap, TOPICS)
    print(f"broker:    {bootstrap} (point any Kafka client here)", flush=True)
    port = free_port()
    children.append(_spawn("run", "--bootstrap", bootstrap, "--metrics-port", str(port),
                           "--metrics-bind", "127.0.0.1", "--log-level", "WARNING"))
    print(f"service:   pba run, metrics on http://127.0.0.1:{port}/metrics", flush=True)
    if not await _ready(port, children[-1], stop):
        return
    children.append(_spawn("simulate", "--bootstrap", bootstrap, "--links", "12", "--rate", "60",
                           "--duration", "86400", "--regime", "mixed", "--bad-rate", "0.01", "-q"))
    traces = str(default_traces_dir())
    if Path(traces, "index.csv").is_file():
        children.append(_spawn("simulate", "--bootstrap", bootstrap, "--links", "6", "--rate", "30",
                               "--duration", "86400", "--traces", traces, "--bad-rate", "0.01",
                               "--seed", "2", "-q"))
        print(f"simulator: 12 synthetic links + 6 real traces from {traces}", flush=True)
    else:
        print("simulator: 12 synthetic links (no ../shared/traces here)", flush=True)
    print(f"predictions (the fallback serves a link's first {MODEL_MIN_SAMPLES - 1} samples, then the "
          "models):\n",
          flush=True)
    if sys.stdout.isatty():
        await _live(bootstrap, port, stop)
    else:
        await tail(bootstrap, PREDICTIONS, from_beginning=True, stop=stop)


async def _live(bootstrap: str, metrics_port: int, stop: asyncio.Event) -> None:
    """The live table, redrawn four times a second until Ctrl-C."""
    from rich.live import Live

    from consumer.tools.demo_view import LiveView

    view = LiveView(PREDICTIONS, INPUT, DEAD_LETTERS)
    consumer = AIOKafkaConsumer(*TOPICS, bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    loop = asyncio.get_running_loop()
    next_lag = 0.0
    await consumer.start()
    try:
        with Live(view.render(), refresh_per_second=4) as live:
            while not stop.is_set():
                for records in (await consumer.getmany(timeout_ms=250)).values():
                    for record in records:
                        view.take(record)
                if loop.time() >= next_lag:
                    next_lag = loop.time() + 2.0
                    view.lag = await loop.run_in_executor(None, _lag, metrics_port)
                live.update(view.render())
    finally:
        await consumer.stop()


def _lag(metrics_port: int) -> float | None:
    """The service's consumer lag, summed over its partitions (from its /metrics)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - our own local endpoint
            text = answer.read().decode()
    except OSError:
        return None
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "pba_consumer_lag" for sample in family.samples)


async def _ready(port: int, service: subprocess.Popen[bytes], stop: asyncio.Event,
                 timeout_s: float = 120.0) -> bool:
    """Wait for the service's /readyz before the simulators start: events sent while it
    loads its models and joins the group would show as predictions seconds old."""
    url = f"http://127.0.0.1:{port}/readyz"
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not stop.is_set():
        if service.poll() is not None:
            print(f"pba run exited with {service.returncode} before it was ready (its error is above)",
                  flush=True)
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - our own local endpoint
                if answer.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        if asyncio.get_running_loop().time() > deadline:
            print(f"pba run was not ready after {timeout_s:.0f} s; stopping", flush=True)
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)
    return False


if __name__ == "__main__":
    sys.exit(main())
