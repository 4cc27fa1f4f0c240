"""Loading the service's configuration: four layers merged into one ServiceConfig.

Defaults < TOML file (`--config FILE.toml`) < environment (`PBA_<NAME>`) < command-line
flags. Every field is a flag (`--input-topic`), an environment variable
(`PBA_INPUT_TOPIC`; the bootstrap address is `PBA_KAFKA_BOOTSTRAP`) and a TOML key
(`input_topic = "..."`, at the top level or in a `[pba]` table). A name that is no
setting, in the file or the environment, is refused with the nearest one; all problems
are reported together, each with what to change.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from consumer.config import ConfigError, ServiceConfig, connection_problems, validate

ENV_NAMES = {"bootstrap": "PBA_KAFKA_BOOTSTRAP"}
#: PBA_ variables that are not settings of `pba run`: read by it (the config file) or by
#: the tools and tests, so their presence is no typo
OTHER_ENV = frozenset({"PBA_CONFIG", "PBA_TRACES_DIR", "PBA_TEST_BROKER", "PBA_RELIABILITY_SCALE"})
#: what Kubernetes sets in every pod for a Service in its namespace (pba-stream ->
#: PBA_STREAM_SERVICE_HOST, PBA_STREAM_PORT=tcp://..., PBA_STREAM_PORT_9308_TCP_ADDR, ...)
_SERVICE_LINK = re.compile(r"PBA_\w*_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)")

def env_name(name: str) -> str:
    return ENV_NAMES.get(name, f"PBA_{name.upper()}")


def _field_type(f: dataclasses.Field[Any]) -> type:
    text = str(f.type)
    for candidate in (bool, int, float, Path):
        if candidate.__name__ in text:
            return candidate
    return str


_NUMBER_WORDS = {int: "a whole number", float: "a number"}


def _convert(name: str, raw: Any, kind: type, problems: list[str], where: str) -> Any:
    if raw is None:
        return None
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{raw!r} is not a boolean (true/false)")
        if kind is int and isinstance(raw, float) and not raw.is_integer():
            raise ValueError(f"{raw!r} is not a whole number")
        try:
            return kind(raw)
        except ValueError:  # int()'s and float()'s own words ("invalid literal ...") are Python's
            if kind in _NUMBER_WORDS:
                raise ValueError(f"{raw!r} is not {_NUMBER_WORDS[kind]}") from None
            raise
    except (TypeError, ValueError) as exc:
        problems.append(f"{name} ({where}): {exc}")
        return None


def add_arguments(parser: argparse.ArgumentParser, names: Collection[str] | None = None) -> None:
    """One flag per field (`names`: only those); defaults stay None so unset flags do not
    override other layers."""
    parser.add_argument("--config", type=Path, default=None, metavar="FILE.toml",
                        help="TOML file with any of the settings below (env PBA_CONFIG)")
    for f in fields(ServiceConfig):
        if names is not None and f.name not in names:
            continue
        kind = _field_type(f)
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (env {env_name(f.name)}; default {f.default!r})"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            choices = f.metadata.get("choices")  # shown as {a,b,c}, so no metavar then
            parser.add_argument(flag, dest=f.name, default=None, help=help_text, choices=choices,
                                metavar=None if choices else f.name.upper())


def load_config(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None,
    names: Collection[str] | None = None,
) -> ServiceConfig:
    """Merge the layers and validate; raises ConfigError listing every problem.

    `names`: only these settings are taken (the client commands take CONNECTION), the
    others keep their defaults, and only their checks run. A config file or environment
    shared with `pba run` may still hold its other settings; an unknown one is refused
    all the same."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None) or environ.get("PBA_CONFIG")
    known = {f.name: f for f in fields(ServiceConfig)}
    taken = {name: f for name, f in known.items() if names is None or name in names}
    if config_path:
        for key, (where, raw) in _read_toml(Path(config_path), problems).items():
            if key not in known:
                problems.append(f"{where}: unknown setting {key!r}{_nearest(key, known)}")
            elif key in taken:
                values[key] = _convert(key, raw, _field_type(known[key]), problems, where)
    problems += _unknown_environment(environ, known)
    for name, f in taken.items():
        if env_name(name) in environ:
            values[name] = _convert(name, environ[env_name(name)], _field_type(f), problems, env_name(name))
    for name, f in taken.items():
        raw = getattr(args, name, None) if args is not None else None
        if raw is not None:
            values[name] = _convert(name, raw, _field_type(f), problems, "--" + name.replace("_", "-"))
    if problems:
        raise ConfigError(_report(problems))
    config = ServiceConfig(**{k: v for k, v in values.items() if v is not None or k in _NULLABLE})
    problems = validate(config) if names is None else connection_problems(config, embedded=False)
    if problems:
        raise ConfigError(_report(problems))
    return config


_NULLABLE = frozenset(
    f.name for f in fields(ServiceConfig) if f.default is None
)


def _nearest(name: str, candidates: Iterable[str]) -> str:
    """ "; did you mean X?" for the closest candidate, or nothing when none is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _unknown_environment(environ: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """A PBA_ variable that is no setting is most likely a misspelt one (PBA_BOOTSTRAP):
    named, with the nearest setting, instead of ignored. Kubernetes' service links
    (PBA_STREAM_SERVICE_HOST, PBA_STREAM_PORT=tcp://...) are not ours and pass."""
    settings = {env_name(name) for name in known}
    problems = []
    for name, value in environ.items():
        if (not name.startswith("PBA_") or name in settings or name in OTHER_ENV
                or _SERVICE_LINK.fullmatch(name)
                or (name.endswith("_PORT") and value.startswith(("tcp://", "udp://", "sctp://")))):
            continue
        problems.append(f"environment variable {name} is not a setting{_nearest(name, settings)}")
    return problems


def _read_toml(path: Path, problems: list[str]) -> dict[str, tuple[str, Any]]:
    """Settings by name, each with where it was found. Top-level keys and a `[pba]`
    table are both read (a file may be shared with other tools under [pba]); a setting
    in both places is refused rather than one of them silently winning."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        problems.append(f"config file {path} does not exist")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"config file {path} is not valid TOML: {exc}")
        return {}
    table = data.pop("pba", None)
    found = {key: (str(path), raw) for key, raw in data.items()}
    if table is None:
        return found
    if not isinstance(table, dict):
        problems.append(f"{path}: pba must be a table ([pba]) of settings, got {table!r}")
        return found
    for key, raw in table.items():
        if key in found:
            problems.append(f"{path}: {key} is set both at the top level and in [pba]; keep one")
        found[key] = (f"{path} [pba]", raw)
    return found


def _report(problems: Sequence[str]) -> str:
    return "invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems)
