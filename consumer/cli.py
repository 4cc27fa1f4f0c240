"""`pba`: the command line. Each subcommand parses its flags and hands over to its module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
