"""What each `pba` command beside `pba run` does once consumer/cli.py has parsed its
flags: a handler per command, each returning the exit status (2 with a message for what
a person can fix). Each imports the module that does the work only when it runs, so that
`pba tail` does not load the models and the service never loads training code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def _connection(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The bootstrap address and the client security settings, from the same layers as
    `pba run`'s; a problem ends the command with exit status 2 and what to change."""
    from consumer.config import CONNECTION, ConfigError
    from consumer.config_load import load_config

    try:
        config = load_config(args, names=CONNECTION)
    except ConfigError as exc:
        print(f"pba {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    assert config.bootstrap is not None  # load_config refuses a missing one
    return config.bootstrap, config.kafka_security()


def cmd_broker(args: argparse.Namespace) -> int:
    from consumer.tools.broker import BrokerError, run_foreground

    try:
        return run_foreground(port=args.port, host=args.host)
    except BrokerError as exc:
        print(f"pba broker: {exc}", file=sys.stderr)
        return 2


def cmd_backtest(args: argparse.Namespace) -> int:
    from predictor.manifest import ManifestError
    from predictor.runtime import ModelError
    from training.backtest import run_backtest
    from training.traces import TraceError

    try:
        run_backtest(
            args.traces, args.out, mode=args.mode, models_dir=args.models,
            allow_fallback=args.allow_fallback, quiet=args.quiet, precision=args.precision,
        )
    except (ManifestError, ModelError, TraceError, OSError) as exc:
        print(f"pba backtest: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    try:
        from training.fine_tune import FineTuneError
        from training.train import TrainSettings, recalibrate, run
    except ImportError as exc:
        print(f"pba train: {exc.name} is missing; install the training extra: "
              "pip install -e '.[train]'", file=sys.stderr)
        return 2
    from predictor.manifest import ManifestError
    from predictor.runtime import ModelError
    from training.traces import TraceError, default_traces_dir

    if args.fine_tune and args.calibrate_only:
        print("pba train: --fine-tune trains, --calibrate-only does not: choose one", file=sys.stderr)
        return 2
    modes = ("internet", "datacenter") if args.mode == "both" else (args.mode,)
    settings = TrainSettings(
        modes=modes, traces=args.traces or default_traces_dir(), out=args.out, epochs=args.epochs,
        seed=args.seed, device=args.device, plot=args.plot, progress=not args.quiet,
        windows_per_source=args.windows_per_source, synthetic_links=args.synthetic_links,
        batch_size=args.batch_size, validation_windows_per_source=args.validation_windows_per_source,
        fine_tune=args.fine_tune, learning_rate=args.learning_rate,
    )
    try:
        manifest = recalibrate(settings) if args.calibrate_only else run(settings)
    except (TraceError, OSError, ManifestError, ModelError, FineTuneError) as exc:
        print(f"pba train: {exc}", file=sys.stderr)
        return 2
    print(f"models and manifest written: {manifest}")
    return 0


def _run_until_signal(coro_factory: Callable[[Any], Any]) -> Any:
    """Run a coroutine given a stop event that Ctrl-C / SIGTERM set, for a clean exit."""
    import asyncio
    import signal

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await coro_factory(stop)

    return asyncio.run(main())


def cmd_simulate(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from consumer.tools.simulate import SimulationPlan, simulate, window_note

    plan = SimulationPlan(links=args.links, rate=args.rate, duration=args.duration, regime=args.regime,
                          traces=args.traces, scale=args.scale, bad_rate=args.bad_rate, seed=args.seed)
    problems = plan.check()
    if problems:
        print("pba simulate: " + "; ".join(problems), file=sys.stderr)
        return 2
    note = window_note(plan)
    if note and not args.quiet:
        print(f"pba simulate: {note}", file=sys.stderr)
    bootstrap, security = _connection(args)
    try:
        _run_until_signal(lambda stop: simulate(plan, bootstrap, args.topic, progress=not args.quiet,
                                                security=security, stop=stop))
    except (KafkaError, ValueError, OSError) as exc:
        print(f"pba simulate: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from consumer.tools.tail import tail

    bootstrap, security = _connection(args)
    try:
        _run_until_signal(lambda stop: tail(
            bootstrap, args.topic, as_json=args.json, from_beginning=args.from_beginning,
            max_messages=args.max_messages, link=args.link, stop=stop, security=security))
    except KafkaError as exc:
        print(f"pba tail: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pba tail | head`: the reader has all it wanted
        import os

        # the interpreter flushes stdout once more at exit: into nothing, not the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from consumer.tools.agent import Agent, AgentError, Peer, default_link_id, run_agent

    try:
        peer = Peer.parse(args.peer) if args.peer else None
        link_id = args.link_id or default_link_id(args.interface, peer)
        agent = Agent(args.interface, peer, args.interval, link_id)
    except AgentError as exc:
        print(f"pba agent: {exc}", file=sys.stderr)
        return 2
    if args.interval <= 0:
        print("pba agent: --interval must be > 0", file=sys.stderr)
        return 2
    bootstrap, security = _connection(args)
    try:
        _run_until_signal(lambda stop: run_agent(agent, bootstrap, args.topic, once=args.once, stop=stop,
                                                 security=security))
    except KafkaError as exc:
        print(f"pba agent: cannot publish to {bootstrap}: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from consumer.tools.bench import PARTS, render, run_bench

    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip()) if args.parts else PARTS
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        print(f"pba bench: unknown part(s) {', '.join(unknown) or '(none given)'} in --parts; "
              f"choose from {','.join(PARTS)}", file=sys.stderr)
        return 2
    if args.latency_rate and "latency" not in parts:
        print("pba bench: --latency-rate is for the latency part; add latency to --parts", file=sys.stderr)
        return 2
    result = run_bench(args.mode, links=args.links, events=args.events, precision=args.precision,
                       threads=args.threads, memory_links=args.memory_links, parts=parts,
                       log=lambda msg: print(f"pba bench: {msg}", file=sys.stderr, flush=True),
                       latency_rates=args.latency_rate)
    print(json.dumps(result, indent=2, default=str) if args.json else render(result))
    return 0
