"""`pba run` as a process: the settings loaded and checked, the service until SIGTERM or
SIGINT, its models reloaded on SIGHUP, and the embedded broker when asked for
(--embedded-broker)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from typing import TYPE_CHECKING

from consumer.config import ConfigError, ServiceConfig
from consumer.config_load import load_config
from consumer.health import MetricsPortError
from consumer.logs import configure_logging
from consumer.service import Service
from predictor.manifest import ManifestError
from predictor.runtime import ModelError

if TYPE_CHECKING:
    from consumer.tools.broker import EmbeddedBroker

log = logging.getLogger(__name__)

#: allocations between young-generation collections (CPython's default is 700)
GC_YOUNG_THRESHOLD = 10_000


def tune_garbage_collection() -> None:
    """Collect cycles less often, and never among what start-up loaded.

    A batch allocates a few short-lived tuples per event, which reference counting frees;
    with the default threshold the cycle collector ran every few hundred events to find
    nothing and took about a third of the ingest time (docs/BENCHMARKS.md). Freezing
    moves modules, models and configuration out of its sight for good.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def serve(config: ServiceConfig) -> int:
    """Run until SIGTERM/SIGINT, on the embedded broker with --embedded-broker."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    broker = None
    service = Service(config)
    tune_garbage_collection()  # after start-up: the models and modules it loaded are frozen
    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        task = asyncio.create_task(service.reload_models())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    if config.embedded_broker:
        broker = start_embedded_broker()
        service.bootstrap = broker.bootstrap
    try:
        await service.run(stop)
    finally:
        if broker is not None:
            broker.stop()
    log.info("stopped")
    return 0


def start_embedded_broker() -> EmbeddedBroker:
    """The in-memory broker of --embedded-broker, announced on stdout with its address."""
    from consumer.tools.broker import EmbeddedBroker

    broker = EmbeddedBroker().start()
    print(f"--embedded-broker: started an in-memory broker at {broker.bootstrap}", flush=True)
    return broker


def main(args: argparse.Namespace) -> int:
    """`pba run` once cli.py has parsed its flags: the exit status, 2 with a message for
    a setting or a model a person can fix."""
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"pba run: {exc}", file=sys.stderr)
        return 2
    level = _lowered(config.log_level, args.verbose)
    configure_logging(level, config.log_format)
    logging.getLogger("consumer").info("starting", extra={"config": config.redacted()})
    if config.workers > 1:
        from consumer.workers import supervise

        return supervise(config, level)
    return serve_until_stopped(config)


def serve_until_stopped(config: ServiceConfig) -> int:
    """One member, in this process: its exit status (2 with a message for models a person
    can fix, or a metrics port in use)."""
    try:
        return asyncio.run(serve(config))
    except (ManifestError, ModelError) as exc:
        print(f"pba run: cannot load models: {exc}\n(use --allow-fallback to serve the heuristic "
              "instead)", file=sys.stderr)
        return 2
    except MetricsPortError as exc:
        print(f"pba run: {exc}", file=sys.stderr)
        return 2


def _lowered(level: str, steps: int) -> str:
    """The log level `steps` levels more verbose than `level` (-v, -vv), DEBUG at most."""
    levels = ("DEBUG", "INFO", "WARNING", "ERROR")
    return levels[max(0, levels.index(level.upper()) - steps)]
