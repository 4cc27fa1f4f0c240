"""Reading the real throughput traces (../shared/traces form) and splitting them by group.

A trace CSV has `t_s,bandwidth_mbps,latency_ms,packet_loss,jitter_ms`; an empty cell
means "not measured" and becomes NaN, never 0. Rows exist only where a measurement
exists: a jump in t_s larger than the source's step is a gap, which the window's dt
channel carries into the features.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from predictor.window import MEASURED_CHANNELS

TRACE_COLUMNS = ("t_s", "bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms")


class TraceError(ValueError):
    """A trace file that does not have the expected form."""


@dataclass(frozen=True)
class Trace:
    path: str
    t_s: np.ndarray  # (n,) float64, strictly increasing
    values: np.ndarray  # (n, 5) float32 measured channels, NaN = not measured

    def __len__(self) -> int:
        return len(self.t_s)


def read_trace(path: str | Path) -> Trace:
    """Load one trace; rows with a missing or repeated time are an error, not skipped."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:5]) != TRACE_COLUMNS:
            raise TraceError(f"{path}: header must start with {','.join(TRACE_COLUMNS)}")
        rows = [row for row in reader if row]
    n = len(rows)
    t_s = np.empty(n, dtype=np.float64)
    values = np.full((n, MEASURED_CHANNELS), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        try:
            t_s[i] = float(row[0])
            for c in range(1, 5):
                cell = row[c] if c < len(row) else ""
                if cell:
                    values[i, c - 1] = float(cell)
        except ValueError as exc:
            raise TraceError(f"{path}:{i + 2}: {exc}") from None
    if n > 1 and not np.all(np.diff(t_s) > 0):
        raise TraceError(f"{path}: t_s must increase strictly")
    if n and np.isnan(values[:, 0]).any():
        raise TraceError(f"{path}: bandwidth_mbps is empty on some row")
    return Trace(str(path), t_s, values)


@dataclass(frozen=True)
class TraceInfo:
    source: str
    path: Path
    group: str
    step_s: float
    n_rows: int


def read_index(traces_dir: Path | str) -> list[TraceInfo]:
    traces_dir = Path(traces_dir)
    with open(traces_dir / "index.csv", newline="") as fh:
        return [
            TraceInfo(
                source=row["source"],
                path=traces_dir / row["path"],
                group=row["group"],
                step_s=float(row["step_s"]),
                n_rows=int(row["n_rows"]),
            )
            for row in csv.DictReader(fh)
        ]


def is_validation_group(group: str, fraction: float = 0.2) -> bool:
    """Stable split by group (the leakage unit): a hash of the group name, never random
    windows, so a group's traces are all on one side whatever order they are read in."""
    digest = hashlib.sha256(group.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_by_group(
    infos: list[TraceInfo], fraction: float = 0.2
) -> tuple[list[TraceInfo], list[TraceInfo]]:
    train = [t for t in infos if not is_validation_group(t.group, fraction)]
    valid = [t for t in infos if is_validation_group(t.group, fraction)]
    return train, valid
