"""The service's configuration: one typed place, and the checks it must pass.

Each field is one setting, with its help, default and choices; config_load.py merges
defaults, TOML file, environment and flags into it. Everything is checked at start-up
(validate), the connection settings that every command shares on their own too.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from consumer.flags import FlagsError, FlagsFile
from predictor.link_predictor import MODES
from predictor.manifest import FLOAT, PRECISIONS
from schemas import DEAD_LETTERS_TOPIC, METRICS_TOPIC, PREDICTIONS_TOPIC

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_FORMATS = ("text", "json")
#: Kafka's record batch codecs; the consumer reads all of them whatever this is set to
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
#: where a group without a committed offset starts reading a partition (Kafka's auto.offset.reset)
START_AT = ("earliest", "latest")
SECRET_FIELDS = frozenset({"sasl_password"})
#: the settings every command that talks to Kafka shares: where it is, and how securely
CONNECTION = ("bootstrap", "security_protocol", "ssl_cafile", "ssl_certfile", "ssl_keyfile",
              "sasl_mechanism", "sasl_username", "sasl_password")


class ConfigError(ValueError):
    """Configuration that cannot work; the message lists every problem found."""


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class ServiceConfig:
    bootstrap: str | None = field(default=None, metadata=_help(
        "Kafka bootstrap servers, HOST:PORT[,HOST:PORT]"))
    embedded_broker: bool = field(default=False, metadata=_help(
        "start an in-memory broker in this process and serve from it, to try the service "
        "out (everything it holds is lost when the service stops)"))
    input_topic: str = field(default=METRICS_TOPIC, metadata=_help("topic of metric events"))
    output_topic: str = field(default=PREDICTIONS_TOPIC, metadata=_help("topic for predictions"))
    dlq_topic: str = field(default=DEAD_LETTERS_TOPIC, metadata=_help("dead-letter topic for bad input"))
    shadow_topic: str | None = field(default=None, metadata=_help(
        "in shadow mode, publish here instead of the output topic (default: output topic, "
        "flagged shadow=true)"))
    group_id: str = field(default="pba-stream", metadata=_help("consumer group id"))
    group_instance_id: str | None = field(default=None, metadata=_help(
        "static group membership (KIP-345): a member restarted with the same id takes its "
        "partitions back at once instead of after a rebalance (set one per pod, e.g. its "
        "name; never the same for two running members)"))
    mode: str = field(default="auto", metadata=_help("prediction mode", choices=MODES))
    models: Path | None = field(default=None, metadata=_help(
        "models directory with manifest.json (default: the shipped models); a new set copied "
        "in is checked and swapped in while running, as is the set on SIGHUP"))
    allow_fallback: bool = field(default=False, metadata=_help(
        "serve the heuristic for a model that cannot load, instead of refusing to start"))
    precision: str = field(default=FLOAT, metadata=_help(
        "model variant (int8: faster, 0.0-1.1 points of hit rate below float; docs/MODEL_CARD.md)",
        choices=PRECISIONS))
    inference_threads: int = field(default=0, metadata=_help(
        "inference threads of each worker, each running a share of a batch on an ONNX Runtime "
        "session of its own (0: the worker's share of the cores)"))
    workers: int = field(default=1, metadata=_help(
        "consumer-group members started together in processes of their own, each with its "
        "share of the cores; on 2 cores, 2 workers with 1 inference thread each predicted "
        "about a third more than 1 with 2 (docs/SCALING.md); SIGTERM drains them all; worker i "
        "serves /metrics and the probes on metrics_port + i"))
    metrics_port: int = field(default=9308, metadata=_help(
        "port for /metrics, /healthz and /readyz (0: off)"))
    metrics_bind: str = field(default="0.0.0.0", metadata=_help(
        "address the metrics/health server listens on (127.0.0.1 to keep it local)"))
    max_links: int = field(default=1_000_000, metadata=_help(
        "links tracked per process; at the cap the least recently seen are evicted"))
    idle_evict_s: float = field(default=3600.0, metadata=_help(
        "forget a link after this many seconds without an event"))
    batch_max: int = field(default=1024, metadata=_help("most events taken per poll"))
    batch_wait_ms: int = field(default=5, metadata=_help(
        "longest wait for more events before predicting a partial batch"))
    max_in_flight: int = field(default=4, metadata=_help(
        "batches published but not yet acknowledged before fetching pauses"))
    max_event_bytes: int = field(default=16384, metadata=_help("larger messages are dead-lettered"))
    max_future_s: float = field(default=3600.0, metadata=_help(
        "dead-letter events stamped more than this many seconds ahead of this host's clock: "
        "a link would otherwise ignore every real event until its clock catches up "
        "(Kafka's own default limit; 0: no limit)"))
    start_at: str = field(default="earliest", metadata=_help(
        "where a group with no committed offset (its first deployment, or offsets past the "
        "topic's retention) starts: earliest predicts everything retained; latest skips the "
        "backlog and starts at the end, with windows rebuilt from the last --rebuild-seconds "
        "so the models serve from the first new event", choices=START_AT))
    rebuild_seconds: float = field(default=120.0, metadata=_help(
        "on partition assignment, replay this much recent input history to rebuild windows"))
    rebuild_max_records: int = field(default=200_000, metadata=_help(
        "cap on records replayed per partition when rebuilding windows"))
    horizon_s: float = field(default=1.0, metadata=_help("prediction horizon and validity, seconds"))
    flags_file: Path | None = field(default=None, metadata=_help(
        "feature-flag TOML file, reloaded when it changes (rollout, kill switch, shadow, mode)"))
    create_topic_partitions: int = field(default=4, metadata=_help(
        "a topic the service uses and finds missing is created with this many partitions "
        "(the input's bound how many instances share the work); 0: create none, leave it to "
        "the cluster's operators or its auto-creation"))
    compression: str = field(default="none", metadata=_help(
        "codec for the batches this service publishes (predictions, dead letters): worth it "
        "when the network to the brokers is the limit, costs CPU otherwise", choices=COMPRESSIONS))
    idempotent: bool = field(default=False, metadata=_help(
        "idempotent producer (needs broker support; the embedded broker has none)"))
    security_protocol: str = field(default="PLAINTEXT", metadata=_help(
        "Kafka security protocol", choices=SECURITY_PROTOCOLS))
    ssl_cafile: Path | None = field(default=None, metadata=_help("CA bundle to verify the brokers"))
    ssl_certfile: Path | None = field(default=None, metadata=_help("client certificate (mutual TLS)"))
    ssl_keyfile: Path | None = field(default=None, metadata=_help("client key (mutual TLS)"))
    sasl_mechanism: str = field(default="PLAIN", metadata=_help("SASL mechanism", choices=SASL_MECHANISMS))
    sasl_username: str | None = field(default=None, metadata=_help("SASL user name"))
    sasl_password: str | None = field(default=None, metadata=_help(
        "SASL password (prefer the environment variable; never logged)"))
    session_timeout_s: float = field(default=10.0, metadata=_help(
        "a member silent this long (crashed, frozen) loses its partitions to the others; "
        "the broker bounds it (Kafka: 6..300 s by default)"))
    liveness_timeout_s: float = field(default=60.0, metadata=_help(
        "/healthz fails once the event loop, or the poll loop outside a rebuild, has not "
        "moved for this long, so that the orchestrator restarts a stuck process"))
    shutdown_timeout_s: float = field(default=10.0, metadata=_help(
        "on SIGTERM, longest wait to finish, publish and commit before exiting"))
    log_level: str = field(default="INFO", metadata=_help("DEBUG, INFO, WARNING or ERROR"))
    log_format: str = field(default="text", metadata=_help("log line format", choices=LOG_FORMATS))

    def redacted(self) -> dict[str, Any]:
        """The configuration as loggable values, secrets replaced."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value is not None:
                value = "***"
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out

    def kafka_security(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (TLS context built and verified here)."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None
            )
            if self.ssl_certfile:
                context.load_cert_chain(
                    str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None
                )
            kwargs["ssl_context"] = context
        if self.security_protocol.startswith("SASL"):
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return kwargs


def connection_problems(config: ServiceConfig, embedded: bool) -> list[str]:
    """The checks of the settings in CONNECTION, which every command that talks to Kafka
    shares (`embedded`: --embedded-broker is an alternative to a bootstrap)."""
    problems = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    check(config.security_protocol in SECURITY_PROTOCOLS,
          f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}")
    check(config.sasl_mechanism in SASL_MECHANISMS,
          f"sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}")
    if config.bootstrap is None and not config.embedded_broker:
        problems.append("no Kafka bootstrap address: give --bootstrap HOST:PORT (env PBA_KAFKA_BOOTSTRAP)"
                        + (", or --embedded-broker to try the service out on an in-memory broker"
                           if embedded else ""))
    if config.bootstrap is not None and config.embedded_broker:
        problems.append("--bootstrap and --embedded-broker are both set; choose one")
    if config.bootstrap is not None:
        for server in config.bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            check(bool(host) and port.isdigit(),
                  f"bootstrap {server!r} must look like HOST:PORT (e.g. kafka-1:9092)")
    if config.security_protocol in ("SSL", "SASL_SSL"):
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(config, name)
            check(path is None or Path(path).is_file(), f"{name} {path} does not exist")
        check(config.ssl_keyfile is None or config.ssl_certfile is not None,
              "ssl_keyfile needs ssl_certfile")
    elif config.ssl_cafile or config.ssl_certfile:
        problems.append("ssl_* files are set but security_protocol is "
                        f"{config.security_protocol}; use SSL or SASL_SSL")
    if config.security_protocol.startswith("SASL"):
        check(bool(config.sasl_username) and bool(config.sasl_password),
              f"security_protocol {config.security_protocol} needs sasl_username and sasl_password "
              "(set the password with PBA_SASL_PASSWORD)")
    return problems


def validate(config: ServiceConfig) -> list[str]:
    problems = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    problems += connection_problems(config, embedded=True)
    check(config.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {config.mode!r}")
    check(config.precision in PRECISIONS,
          f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    check(config.log_format in LOG_FORMATS, "log_format must be text or json")
    check(config.start_at in START_AT, f"start_at must be earliest or latest, got {config.start_at!r}")
    check(config.compression in COMPRESSIONS,
          f"compression must be one of {', '.join(COMPRESSIONS)}, got {config.compression!r}")
    check(config.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
          f"log_level must be DEBUG, INFO, WARNING or ERROR, got {config.log_level!r}")
    check(0 <= config.metrics_port <= 65535, f"metrics_port must be 0..65535, got {config.metrics_port}")
    for name in ("input_topic", "output_topic", "dlq_topic", "group_id"):
        check(bool(getattr(config, name)), f"{name} must not be empty")
    topics = [config.input_topic, config.output_topic, config.dlq_topic]
    check(len(set(topics)) == 3, "input, output and dead-letter topics must all differ")
    check(config.shadow_topic != config.input_topic, "shadow_topic must differ from the input topic")
    check(config.max_links >= 1, "max_links must be at least 1")
    check(config.batch_max >= 1, "batch_max must be at least 1")
    check(config.batch_wait_ms >= 0, "batch_wait_ms must be >= 0")
    check(config.max_in_flight >= 1, "max_in_flight must be at least 1")
    check(config.idle_evict_s > 0, "idle_evict_s must be > 0")
    check(config.horizon_s > 0, "horizon_s must be > 0")
    check(config.max_event_bytes >= 256, "max_event_bytes must be at least 256")
    check(config.rebuild_seconds >= 0 and config.rebuild_max_records >= 0,
          "rebuild_seconds and rebuild_max_records must be >= 0")
    check(config.shutdown_timeout_s > 0, "shutdown_timeout_s must be > 0")
    check(config.liveness_timeout_s >= 1, "liveness_timeout_s must be at least 1 second")
    check(config.max_future_s >= 0, "max_future_s must be >= 0 (0: no limit)")
    check(1 <= config.session_timeout_s <= 3600, "session_timeout_s must be 1..3600 seconds")
    check(config.inference_threads >= 0,
          "inference_threads must be >= 0 (0: the worker's share of the cores)")
    check(config.workers >= 1, f"workers must be at least 1, got {config.workers}")
    check(config.metrics_port == 0 or config.metrics_port + config.workers - 1 <= 65535,
          f"metrics_port {config.metrics_port} + {config.workers} workers runs past port 65535 "
          "(worker i listens on metrics_port + i)")
    check(config.create_topic_partitions >= 0, "create_topic_partitions must be >= 0 (0: create none)")
    if config.models is not None:
        check(Path(config.models).is_dir(), f"models directory {config.models} does not exist")
    if config.flags_file is not None:
        if not Path(config.flags_file).is_file():
            problems.append(f"flags_file {config.flags_file} does not exist")
        else:  # read now, so a bad file stops start-up with the others (later edits are hot-reloaded)
            try:
                FlagsFile(Path(config.flags_file))
            except FlagsError as exc:
                problems.append(f"flags_file {exc}")
    return problems
