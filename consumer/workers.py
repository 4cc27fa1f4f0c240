"""`pba run --workers N`: N members of the consumer group on one host, started together,
each a process of its own with its share of the cores.

Why processes: one member's hot path is one Python thread, and ONNX Runtime's threads
wait for it while it waits for them. On 2 cores, two members with one inference thread
each predicted about a third more than one member with two (docs/BENCHMARKS.md). Kafka
shares the partitions among them as among any members of the group, so nothing here
knows about partitions or links.

The supervisor holds no state of the service's. It forwards SIGTERM and SIGINT (each
worker then drains: finishes its batch, publishes, commits, leaves the group) and SIGHUP
(reload the models). A worker that exits on its own stops the others, and the supervisor
exits with that worker's status: the orchestrator restarts the whole unit instead of it
running short-handed with nobody told.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

from consumer.config import ServiceConfig

log = logging.getLogger(__name__)

#: beyond the workers' own shutdown_timeout_s: their interpreters' exit
EXIT_GRACE_S = 10.0


def worker_configs(config: ServiceConfig, cores: int | None = None) -> list[ServiceConfig]:
    """Each worker's settings: one member of the group (workers=1), with the cores shared
    among them for inference unless inference_threads fixes it, metrics and probes on a
    port of its own (metrics_port + i), and a static-membership id of its own."""
    cores = cores or os.cpu_count() or 1
    threads = config.inference_threads or max(1, cores // config.workers)
    return [replace(
        config, workers=1, inference_threads=threads,
        metrics_port=config.metrics_port + i if config.metrics_port else 0,
        group_instance_id=f"{config.group_instance_id}-{i}" if config.group_instance_id else None,
    ) for i in range(config.workers)]


def supervise(config: ServiceConfig, log_level: str) -> int:
    """Run config.workers workers until a signal stops them or one exits; the exit
    status: 0 after a clean drain, else the first non-zero one a worker had."""
    broker = None
    if config.embedded_broker:  # one broker for all of them, held here
        from consumer.run import start_embedded_broker

        broker = start_embedded_broker()
        config = replace(config, embedded_broker=False, bootstrap=broker.bootstrap)
    cores = os.cpu_count() or 1
    if config.workers > cores:
        log.warning("more workers than cores: they will take turns on them",
                    extra={"workers": config.workers, "cores": cores})
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda sig, _frame: received.append(sig))
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or sockets
    settings = worker_configs(config, cores)
    workers = [spawn.Process(target=_worker, args=(each, i, log_level), name=f"pba-worker-{i}")
               for i, each in enumerate(settings)]
    try:
        for i, worker in enumerate(workers):
            worker.start()
            log.info("worker started", extra={"worker": i, "pid": worker.pid,
                                              "inference_threads": settings[i].inference_threads,
                                              "metrics_port": settings[i].metrics_port})
        return _watch(workers, received, config.shutdown_timeout_s + EXIT_GRACE_S)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if broker is not None:
            broker.stop()


def _watch(workers: Sequence[BaseProcess], received: list[int], drain_s: float) -> int:
    status = 0
    deadline: float | None = None  # set once stopping: the longest wait for the drain
    running = {worker.sentinel: i for i, worker in enumerate(workers)}
    while running:
        for sentinel in wait(list(running), timeout=0.2):
            i = running.pop(sentinel)  # type: ignore[arg-type]  # a sentinel is an int
            # the sentinel can be ready before the process is reaped (exitcode None)
            workers[i].join()
            code = workers[i].exitcode
            if deadline is not None and code == -signal.SIGTERM:
                code = 0  # stopped while still starting: it had nothing to drain
            if code:
                status = status or (code if code > 0 else 1)
            if deadline is None:
                log.error("worker exited on its own; stopping the others",
                          extra={"worker": i, "exit_code": code})
                deadline = _signal_all(workers, signal.SIGTERM, drain_s)
        while received:
            sig = received.pop(0)
            if sig == signal.SIGHUP:
                _signal_all(workers, signal.SIGHUP, drain_s)
            elif deadline is None:
                log.info("stopping the workers", extra={"signal": signal.Signals(sig).name})
                deadline = _signal_all(workers, signal.SIGTERM, drain_s)
        if deadline is not None and time.monotonic() > deadline and running:
            log.error("workers did not stop in time; killed", extra={"workers": sorted(running.values())})
            for i in running.values():
                workers[i].kill()
            status = status or 1
            deadline = float("inf")
    log.info("stopped", extra={"exit_code": status})
    return status


def _signal_all(workers: Sequence[BaseProcess], sig: int, drain_s: float) -> float:
    for worker in workers:
        if worker.is_alive() and worker.pid is not None:
            os.kill(worker.pid, sig)
    return time.monotonic() + drain_s


def _worker(config: ServiceConfig, index: int, log_level: str) -> None:
    """A worker's process: one member, its log lines tagged with its index."""
    # the supervisor forwards SIGTERM and SIGHUP; a terminal's Ctrl-C reaches the whole
    # process group. Until the service installs its own handlers, SIGINT is left to the
    # supervisor and a reload has nothing to do (the models are loading anyway)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from consumer.logs import configure_logging
    from consumer.run import serve_until_stopped

    configure_logging(log_level, config.log_format, tags={"worker": index})
    threading.Thread(target=_drain_when_orphaned, name="orphan-watch", daemon=True).start()
    sys.exit(serve_until_stopped(config))


def _drain_when_orphaned() -> None:
    """A supervisor killed outright (SIGKILL, OOM) forwards no signal: its workers would
    serve on, unowned. Each one drains as on SIGTERM once its supervisor is gone."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        log.warning("the supervisor is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)
