"""Reading the real throughput traces (../shared/traces form) and splitting them by group.

A trace CSV has `t_s,bandwidth_mbps,latency_ms,packet_loss,jitter_ms`; an empty cell
means "not measured" and becomes NaN, never 0. Rows exist only where a measurement
exists: a jump in t_s larger than the source's step is a gap, which the window's dt
channel carries into the features.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable
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


ROLES = ("train", "validation", "test")


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of one trace assigned to one role."""

    info: TraceInfo
    start: int
    stop: int | None


def _group_rank(group: str) -> float:
    """A stable pseudo-random position in 0..1 for a group (sha256, not Python's hash)."""
    return int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") / 2**64


def split_traces(
    infos: list[TraceInfo], validation: float = 0.15, test: float = 0.15
) -> dict[str, list[Segment]]:
    """Train / validation / test, cut **by group** (the leakage unit) within each source.

    Validation drives early stopping and the confidence calibration; test is held out
    for the model card. A source with fewer than three groups (the Abilene series are
    one group each) cannot be cut by group; its traces are cut in time instead: the
    first part of each trace trains, the next validates, the last tests, so evaluation
    is still on unseen, later data.
    """
    roles: dict[str, list[Segment]] = {role: [] for role in ROLES}
    by_source: dict[str, list[TraceInfo]] = {}
    for info in infos:
        by_source.setdefault(info.source, []).append(info)
    for source_infos in by_source.values():
        groups = sorted({i.group for i in source_infos}, key=_group_rank)
        if len(groups) >= 3:
            n_test = max(1, round(test * len(groups)))
            n_val = max(1, round(validation * len(groups)))
            role_of = {g: "test" for g in groups[:n_test]}
            role_of.update({g: "validation" for g in groups[n_test:n_test + n_val]})
            for info in source_infos:
                roles[role_of.get(info.group, "train")].append(Segment(info, 0, None))
        else:
            for info in source_infos:
                a = int(info.n_rows * (1 - validation - test))
                b = int(info.n_rows * (1 - test))
                roles["train"].append(Segment(info, 0, a))
                roles["validation"].append(Segment(info, a, b))
                roles["test"].append(Segment(info, b, None))
    return roles


def cut(trace: Trace, segment: Segment) -> Trace:
    return Trace(trace.path, trace.t_s[segment.start:segment.stop],
                 trace.values[segment.start:segment.stop])


def pack_traces(infos: list[TraceInfo], out: Path) -> None:
    """All traces in one compressed .npz (for a machine without the traces folder)."""
    traces = [read_trace(i.path) for i in infos]
    lengths = np.array([len(t) for t in traces], dtype=np.int64)
    np.savez_compressed(
        out,
        lengths=lengths,
        t_s=np.concatenate([t.t_s for t in traces]),
        values=np.concatenate([t.values for t in traces]),
        meta=np.array([f"{i.source}|{i.path.name}|{i.group}|{i.step_s}" for i in infos]),
    )


def load_packed(path: Path) -> tuple[list[TraceInfo], dict[str, Trace]]:
    with np.load(path) as data:  # each key access decompresses: read every array once
        meta_all, lengths = data["meta"].tolist(), data["lengths"].tolist()
        t_all, v_all = data["t_s"], data["values"]
    infos, traces = [], {}
    start = 0
    for meta, n in zip(meta_all, lengths, strict=True):
        source, name, group, step = meta.split("|")
        info = TraceInfo(source, Path(source) / name, group, float(step), int(n))
        infos.append(info)
        traces[str(info.path)] = Trace(str(info.path), t_all[start:start + n], v_all[start:start + n])
        start += n
    return infos, traces


def default_traces_dir() -> Path:
    """Where the real traces are when no --traces says: PBA_TRACES_DIR, or ../shared/traces
    beside the checkout (outside the repository: their licences differ)."""
    configured = os.environ.get("PBA_TRACES_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "traces"


def load_traces(location: Path | str) -> tuple[list[TraceInfo], Callable[[TraceInfo], Trace]]:
    """Trace index and a reader, from a traces folder or from a pack_traces() file."""
    location = Path(location)
    if location.suffix == ".npz":
        infos, packed = load_packed(location)
        return infos, lambda info: packed[str(info.path)]
    if not (location / "index.csv").is_file():
        raise TraceError(f"{location} has no index.csv: expected the ../shared/traces folder")
    return read_index(location), lambda info: read_trace(info.path)
