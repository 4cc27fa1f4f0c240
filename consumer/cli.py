"""`pba`: the command line. Each subcommand parses its flags and hands over to its module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from predictor.pipeline import MODES

Handler = Callable[[argparse.Namespace], int]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {port}")
    return port


def _cmd_broker(args: argparse.Namespace) -> int:
    from consumer.broker import BrokerError, run_foreground

    try:
        return run_foreground(port=args.port, host=args.host)
    except BrokerError as exc:
        print(f"pba broker: {exc}", file=sys.stderr)
        return 2


def _cmd_backtest(args: argparse.Namespace) -> int:
    from predictor.manifest import ManifestError
    from predictor.runtime import ModelError
    from training.backtest import run_backtest
    from training.traces import TraceError

    try:
        run_backtest(
            args.traces, args.out, mode=args.mode, models_dir=args.models,
            allow_fallback=args.allow_fallback, quiet=args.quiet,
        )
    except (ManifestError, ModelError, TraceError, OSError) as exc:
        print(f"pba backtest: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pba",
        description="PBA stream: predictive bandwidth allocation over Kafka.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = sub.add_parser(
        "broker",
        help="run the embedded Kafka-protocol broker in the foreground",
        description="Run the embedded in-memory Kafka-protocol broker (Tansu) until Ctrl-C "
        "and print its bootstrap address. Everything it holds is lost when it stops.",
    )
    broker.add_argument("--port", type=_port, default=None, help="port (default: a free one)")
    broker.add_argument("--host", default="127.0.0.1", help="address to listen on")
    broker.set_defaults(handler=_cmd_broker)

    backtest = sub.add_parser(
        "backtest",
        help="replay traces through the predictor and write predictions vs actuals",
        description="Replay each trace CSV (t_s,bandwidth_mbps,latency_ms,packet_loss,jitter_ms) "
        "sample by sample as one link through the service's window and predictor code, "
        "batched across traces. After sample i it writes the prediction for sample i+1, made "
        "from samples 0..i only. Columns: trace,t_s,actual_mbps,predicted_mbps,confidence,"
        "mode (mode is 'fallback' where the heuristic served, e.g. while a window fills).",
    )
    backtest.add_argument("traces", nargs="+", metavar="TRACE.csv", help="trace files")
    backtest.add_argument("--out", required=True, type=Path, metavar="OUT.csv", help="output CSV")
    backtest.add_argument("--mode", default="auto", choices=MODES, help="prediction mode (default auto)")
    backtest.add_argument("--models", type=Path, default=None, metavar="DIR",
                          help="models directory with manifest.json (default: the shipped models)")
    backtest.add_argument("--allow-fallback", action="store_true",
                          help="serve the heuristic where a model cannot load instead of failing")
    backtest.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    backtest.set_defaults(handler=_cmd_backtest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
