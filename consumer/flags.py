"""Feature flags, read from a TOML file and reloaded when it changes.

    # flags.toml
    rollout_percent = 25     # links whose FNV-1a(link_id) % 100 < 25 get v3 (the LSTMs)
    kill_switch = false      # true: every link gets v1 at once
    shadow = false           # true: v1 is published live, v3 alongside it flagged shadow
    mode = "auto"            # auto | hybrid | datacenter | internet (needs those models loaded)

Links outside the rollout are served by "v1", the baseline predictor (last value, with
the fallback's calibrated confidence), as the original's v1 served before v3.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from predictor.link_predictor import MODES

log = logging.getLogger(__name__)

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193


@dataclass(frozen=True)
class Flags:
    rollout_percent: int = 100
    kill_switch: bool = False
    shadow: bool = False
    mode: str | None = None  # None: the configured mode


class FlagsError(ValueError):
    pass


def fnv1a_32(text: str) -> int:
    h = FNV_OFFSET
    for byte in text.encode():
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return h


def rollout_bucket(link_id: str) -> int:
    """0..99: the link is in a rollout of p percent when its bucket is below p."""
    return fnv1a_32(link_id) % 100


def parse_flags(data: dict[str, Any], where: str = "flags") -> Flags:
    known = {f.name for f in fields(Flags)}
    unknown = set(data) - known
    if unknown:
        raise FlagsError(
            f"{where}: unknown flag(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    flags = Flags()
    for key, value in data.items():
        flags = replace(flags, **{key: value})
    if type(flags.rollout_percent) is not int or not 0 <= flags.rollout_percent <= 100:
        raise FlagsError(f"{where}: rollout_percent must be a whole number 0..100")
    for name in ("kill_switch", "shadow"):
        if type(getattr(flags, name)) is not bool:
            raise FlagsError(f"{where}: {name} must be true or false")
    if flags.mode is not None and flags.mode not in MODES:
        raise FlagsError(f"{where}: mode must be one of {', '.join(MODES)}")
    return flags


class FlagsFile:
    """Reloads the file when its modification time changes; a bad edit keeps the old flags."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self.flags = Flags()
        if path is not None:
            self.flags = self._read()
            self._mtime = path.stat().st_mtime

    def _read(self) -> Flags:
        assert self.path is not None
        try:
            with self.path.open("rb") as fh:
                return parse_flags(tomllib.load(fh), str(self.path))
        except tomllib.TOMLDecodeError as exc:
            raise FlagsError(f"{self.path}: not valid TOML: {exc}") from None
        except OSError as exc:  # unreadable: permissions, replaced by a directory, ...
            raise FlagsError(f"{self.path}: cannot read: {exc.strerror or exc}") from None

    def poll(self) -> bool | None:
        """Reload if changed: True reloaded, False refused (old flags kept), None unchanged."""
        if self.path is None:
            return None
        try:
            mtime = self.path.stat().st_mtime
        except OSError:  # gone for now (e.g. mid-replacement): keep the flags we have
            return None
        if mtime == self._mtime:
            return None
        self._mtime = mtime
        try:
            new = self._read()
        except FlagsError as exc:
            log.error("feature flags not reloaded, keeping the previous ones: %s", exc)
            return False
        if new != self.flags:
            log.warning("feature flags changed: %s -> %s", self.flags, new)
        self.flags = new
        return True
