"""`pba`: the command line. Each subcommand's flags and help are here. `pba run` hands
over to consumer/run.py; the other commands to consumer/tools/commands.py, which loads
the tool (or training/) only when its command runs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from predictor.link_predictor import MODES
from predictor.manifest import FLOAT, PRECISIONS
from predictor.modes import MODEL_MIN_SAMPLES, WINDOW_STEPS_BY_NAME
from schemas import DEAD_LETTERS_TOPIC, METRICS_TOPIC, PREDICTIONS_TOPIC

Handler = Callable[[argparse.Namespace], int]


def _kafka_args(parser: argparse.ArgumentParser, default_topic: str, topic_help: str = "topic") -> None:
    """The connection settings of `pba run` (bootstrap, TLS, SASL: flags, environment and
    config file alike), and the topic."""
    from consumer.config import CONNECTION
    from consumer.config_load import add_arguments

    add_arguments(parser, CONNECTION)
    parser.add_argument("--topic", default=default_topic, help=f"{topic_help} (default {default_topic})")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {port}")
    return port


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _rates(text: str) -> tuple[float, ...]:
    """Comma-separated events per second, each > 0, no repeats."""
    try:
        rates = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not events per second: {text!r} (e.g. 500 or 500,1000,2000)") from None
    if not all(0 < rate < float("inf") for rate in rates) or len(set(rates)) != len(rates):
        raise argparse.ArgumentTypeError(f"rates must be > 0 and distinct, got {text!r}")
    return rates


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pba",
        description="PBA stream: predictive bandwidth allocation over Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", dest="verbose_before", action="count", default=0,
                        help="more log output (-vv: debug); also after the command")
    # -v after the command too (`pba run -v`); counted apart, as a subcommand's parse
    # would overwrite the top-level count, and summed in main()
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("-v", "--verbose", dest="verbose_after", action="count", default=0,
                           help="more log output: -v one level, -vv two (down to debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_subparser(verbosity))

    run = sub.add_parser(
        "run",
        help="the service: consume metrics, predict, publish predictions",
        description="Consume metric events, keep a window per link, predict each link's next "
        "interval with the LSTM models, publish predictions with allocations, dead-letter bad "
        "input. Every option can also be set by a PBA_... environment variable or in a TOML "
        "file given with --config (flags win over environment, environment over the file). "
        "It needs --bootstrap, or --embedded-broker to try it out on an in-memory broker.",
    )
    from consumer.config_load import add_arguments

    add_arguments(run)
    run.set_defaults(handler=_run)

    simulate = sub.add_parser(
        "simulate",
        help="publish synthetic or replayed real metric events",
        description="Publish schema-valid metric events for --links links at about --rate events/s "
        "in total for --duration seconds: series from the realistic generator (--regime), or "
        "real traces replayed from --traces (a folder with index.csv, any folder of trace CSVs, or "
        "one file), optionally rescaled with --scale. --bad-rate mixes in malformed events to show "
        "the dead-letter path.",
    )
    _kafka_args(simulate, default_topic=METRICS_TOPIC)
    simulate.add_argument("--links", type=int, default=20, help="number of links (default 20)")
    simulate.add_argument("--rate", type=float, default=200.0, help="events per second in total")
    simulate.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    simulate.add_argument("--regime", default="mixed", choices=("datacenter", "internet", "mixed"))
    simulate.add_argument("--traces", type=Path, default=None, metavar="DIR",
                          help="replay real traces instead of generating")
    simulate.add_argument("--scale", type=float, default=1.0, help="multiply replayed bandwidth by this")
    simulate.add_argument("--bad-rate", type=float, default=0.0, help="fraction of malformed events")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    simulate.set_defaults(handler=_tool("cmd_simulate"))

    agent = sub.add_parser(
        "agent",
        help="publish this host's own measured link metrics",
        description="Measure this host for real and publish one event per --interval: throughput "
        "from the interface's byte counters, capacity where the system reports it, and RTT, "
        "jitter and loss to --peer by timing TCP connects (no root needed).",
    )
    _kafka_args(agent, default_topic=METRICS_TOPIC)
    agent.add_argument("--interface", required=True, help="network interface, e.g. eth0 or lo")
    agent.add_argument("--peer", default=None, metavar="HOST[:PORT]",
                       help="host to measure RTT to (TCP port, default 22)")
    agent.add_argument("--interval", type=float, default=1.0, help="seconds between events")
    agent.add_argument("--link-id", default=None, help="link id (default HOSTNAME:IF[->PEER])")
    agent.add_argument("--once", action="store_true", help="publish one event, print it, exit")
    agent.set_defaults(handler=_tool("cmd_agent"))

    tail_cmd = sub.add_parser(
        "tail",
        help="print predictions (or metric events, or dead letters) as they arrive",
        description="Follow a topic of the service and print a readable table or JSON lines: "
        "predictions (link, mode, predicted and reserved bandwidth, confidence, action, age), "
        "metric events (bandwidth, latency, loss, age), and dead letters with the reason, the "
        "error and where the refused event came from.",
    )
    _kafka_args(tail_cmd, default_topic=PREDICTIONS_TOPIC,
                topic_help=f"topic: the predictions, the input ({METRICS_TOPIC}) or the dead letters "
                f"({DEAD_LETTERS_TOPIC})")
    tail_cmd.add_argument("--json", action="store_true",
                          help="one JSON value per line (a dead letter as an object with its headers)")
    tail_cmd.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    tail_cmd.add_argument("--max-messages", type=int, default=None, help="exit after N records")
    tail_cmd.add_argument("--link", default=None, metavar="ID", help="only this link")
    tail_cmd.set_defaults(handler=_tool("cmd_tail"))

    bench = sub.add_parser(
        "bench",
        help="benchmark against the embedded broker (ceiling, naive, end to end, latency, ingest, memory)",
        description="Measure, in one run on this machine: ONNX Runtime alone on the shipped model "
        "across batch sizes, in each (sessions x threads) configuration that uses every core, the "
        "best of them being the ceiling; one call per event (naive), end to end through the "
        "embedded broker and the service as M members x T threads (`pba run --workers M "
        "--inference-threads T`), the latency of each shape at half of the best end-to-end rate, "
        "ingest without inference, and memory per tracked link; print the ratios.",
    )
    bench.add_argument("--mode", choices=("datacenter", "internet"), default="internet")
    bench.add_argument("--links", type=int, default=500, help="links in the end-to-end run")
    bench.add_argument("--events", type=int, default=160_000, help="events pre-loaded for end to end "
                       "(enough that the members' start stays a small part of the timed span)")
    bench.add_argument("--precision", choices=PRECISIONS, default=FLOAT)
    bench.add_argument("--threads", type=int, default=0,
                       help="ONNX Runtime threads of one `pba run` end to end (default 0: every "
                            "members x threads shape that uses the cores, the best reported)")
    bench.add_argument("--memory-links", type=int, default=1_000_000, help="links for the memory figure")
    bench.add_argument("--parts", default=None, metavar="PART,...",
                       help="parts to run besides the ceiling, comma-separated, of naive, ingest, "
                       "adaptation, memory, end_to_end, latency (default: all; latency also runs "
                       "end_to_end for its rate, and Kafka alone at that rate as its floor)")
    bench.add_argument("--latency-rate", type=_rates, default=(), metavar="EVENTS_PER_S[,...]",
                       help="measure latency (and Kafka alone) at this rate instead of half the best "
                            "end-to-end rate, e.g. to compare settings at one load; several rates "
                            "sweep the load and report the highest one whose p99 stays inside the "
                            "mode's budget (what one replica can take)")
    bench.add_argument("--json", action="store_true", help="JSON summary instead of a table")
    bench.set_defaults(handler=_tool("cmd_bench"))

    broker = sub.add_parser(
        "broker",
        help="run the embedded Kafka-protocol broker in the foreground",
        description="Run the embedded in-memory Kafka-protocol broker (Tansu) until Ctrl-C "
        "and print its bootstrap address. Everything it holds is lost when it stops.",
    )
    broker.add_argument("--port", type=_port, default=None, help="port (default: a free one)")
    broker.add_argument("--host", default="127.0.0.1", help="address to listen on")
    broker.set_defaults(handler=_tool("cmd_broker"))

    backtest = sub.add_parser(
        "backtest",
        help="replay traces through the predictor and write predictions vs actuals",
        description="Replay each trace CSV (t_s,bandwidth_mbps,latency_ms,packet_loss,jitter_ms) "
        "sample by sample as one link through the service's window and predictor code, "
        "batched across traces. After sample i it writes the prediction for sample i+1, made "
        "from samples 0..i only. Columns: trace,t_s,actual_mbps,predicted_mbps,confidence,"
        "mode (mode is 'fallback' where the heuristic served, e.g. for a link's first "
        f"{MODEL_MIN_SAMPLES - 1} samples).",
    )
    backtest.add_argument("traces", nargs="+", metavar="TRACE.csv", help="trace files")
    backtest.add_argument("--out", required=True, type=Path, metavar="OUT.csv", help="output CSV")
    backtest.add_argument("--mode", default="auto", choices=MODES, help="prediction mode (default auto)")
    backtest.add_argument("--models", type=Path, default=None, metavar="DIR",
                          help="models directory with manifest.json (default: the shipped models)")
    backtest.add_argument("--allow-fallback", action="store_true",
                          help="serve the heuristic where a model cannot load instead of failing")
    backtest.add_argument("--precision", choices=PRECISIONS, default=FLOAT,
                          help="model variant, as for pba run (int8: faster, 0.0-1.1 points of hit "
                               "rate below float; docs/MODEL_CARD.md)")
    backtest.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    backtest.set_defaults(handler=_tool("cmd_backtest"))

    train = sub.add_parser(
        "train",
        help="train, export and calibrate the LSTM models (needs the 'train' extra)",
        description=f"Train the datacenter ({WINDOW_STEPS_BY_NAME['datacenter']} steps, LSTM 128/64) "
        f"and/or internet ({WINDOW_STEPS_BY_NAME['internet']} steps, "
        "LSTM 256/128) models on the real traces' training groups plus the realistic "
        "generator, with early stopping on the validation groups; export ONNX (float and "
        "int8), fit the confidence calibration and write manifest.json. Seeded: the same "
        "arguments give the same models on the same machine.",
    )
    train.add_argument("--mode", choices=("datacenter", "internet", "both"), default="both")
    train.add_argument("--epochs", type=int, default=None,
                       help="epoch cap (default: 30 datacenter, 50 internet; early stopping may end sooner)")
    train.add_argument("--plot", action="store_true", help="write PNG figures to OUT/plots")
    train.add_argument("--traces", type=Path, default=None,
                       help="traces folder with index.csv, or a packed .npz (default: PBA_TRACES_DIR, "
                            "or ../shared/traces beside the checkout)")
    train.add_argument("--out", type=Path, default=Path("predictor/models"), help="models directory")
    train.add_argument("--seed", type=int, default=20261129)
    train.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    train.add_argument("--batch-size", type=int, default=256)
    train.add_argument("--windows-per-source", type=int, default=40_000,
                       help="training windows drawn per trace source")
    train.add_argument("--validation-windows-per-source", type=int, default=8_000,
                       help="validation windows per source (early stopping, calibration)")
    train.add_argument("--synthetic-links", type=int, default=120,
                       help="realistic-generator series added to the training data")
    train.add_argument("--calibrate-only", action="store_true",
                       help="refit the confidence calibration of the models in --out and the "
                            "adaptation's gate, no training")
    train.add_argument("--fine-tune", action="store_true",
                       help="train the models in --out further instead of from scratch: the same data, "
                            "a learning rate that decays to zero (cosine), --epochs 3 unless given; "
                            "the best validation loss wins, the starting model included")
    train.add_argument("--learning-rate", type=_positive_float, default=None, metavar="RATE",
                       help="Adam's learning rate (default: 1e-3 datacenter, 5e-4 internet; 1e-4 with "
                            "--fine-tune)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_tool("cmd_train"))
    return parser


def _tool(name: str) -> Handler:
    """The handler `name` of consumer/tools/commands.py, imported when its command runs:
    `pba run` loads no tool module (tests/test_layout.py)."""

    def handler(args: argparse.Namespace) -> int:
        from consumer.tools import commands

        tool: Handler = getattr(commands, name)
        return tool(args)

    return handler


def _run(args: argparse.Namespace) -> int:
    from consumer.run import main as run_main  # the service's modules, only for `pba run`

    return run_main(args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pba-stream")
    except PackageNotFoundError:
        return "(not installed: run from a source tree)"


def _subparser(verbosity: argparse.ArgumentParser) -> type[argparse.ArgumentParser]:
    """The parser class for subcommands: each takes -v/-vv as well."""

    class Subcommand(argparse.ArgumentParser):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**{**kwargs, "parents": [*kwargs.get("parents", []), verbosity]})

    return Subcommand


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose = args.verbose_before + args.verbose_after
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
