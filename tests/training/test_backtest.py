"""`pba backtest` as design.md fixes it: columns, one row per sample from the second on."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from training.traces import read_trace

COLUMNS = ["trace", "t_s", "actual_mbps", "predicted_mbps", "confidence", "mode", "reserve_mbps"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", "backtest", *args],
        capture_output=True, text=True, timeout=300,
    )


@pytest.mark.parametrize("mode", ["auto", "hybrid", "datacenter", "internet"])
def test_backtest_writes_every_row_in_every_mode(
    mode: str, sample_traces: list[Path], tiny_models: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    paths = [str(p) for p in sample_traces]
    done = run_cli("--mode", mode, "--models", str(tiny_models), "--out", str(out), *paths)
    assert done.returncode == 0, done.stderr
    with open(out, newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == COLUMNS
        rows = list(reader)
    expected = sum(len(read_trace(p)) - 1 for p in paths)
    assert len(rows) == expected
    assert [r[0] for r in rows[:1]] == [paths[0]]  # the path exactly as given
    served = {r[5] for r in rows}
    assert "fallback" in served  # warm-up
    assert served - {"fallback"} <= {"datacenter", "internet", "hybrid"}
    assert served - {"fallback"}, "no prediction came from a model"
    for r in rows:
        assert 0 <= float(r[4]) <= 1 and float(r[3]) >= 0
        assert 0 <= float(r[6]) <= float(r[3])  # the reserve: a lower bound of the prediction
    first = read_trace(paths[0])
    assert float(rows[0][1]) == first.t_s[1]
    assert float(rows[0][2]) == pytest.approx(first.values[1, 0], rel=1e-5)
    assert_summary_agrees_with_the_rows(done.stdout, rows, paths)


def hit_percent(predicted: list[float], actual: list[float]) -> str:
    within = sum(a > 0 and abs(p - a) < 0.2 * a for p, a in zip(predicted, actual, strict=True))
    return f"{100 * within / len(actual):.1f}"


def assert_summary_agrees_with_the_rows(stdout: str, rows: list[list[str]], paths: list[str]) -> None:
    """The printed summary: hit rates within +/-20 % (strictly, of a positive actual)
    over all rows and by what served them, the model's from the CSV, the last value's
    from the traces themselves."""
    lines = stdout.splitlines()
    assert lines[0] == ("backtest: predictions within +/-20 % of the actual next sample "
                        f"({len(rows):,} scored)")
    assert lines[1].split() == ["served", "by", "rows", "model", "last_value", "ewma", "harmonic_mean_5"]
    table = {line.split()[0]: line.split()[1:] for line in lines[2:-1]}
    actual = [float(r[2]) for r in rows]
    previous = [float(v) for p in paths for v in read_trace(p).values[:-1, 0]]
    assert table["all"][0] == f"{len(rows):,}"
    assert table["all"][1] == hit_percent([float(r[3]) for r in rows], actual)
    assert table["all"][3] == hit_percent(previous, actual)
    for label in {r[5] for r in rows}:
        mine = [r for r in rows if r[5] == label]
        assert table[label][:2] == [f"{len(mine):,}", hit_percent([float(r[3]) for r in mine],
                                                                  [float(r[2]) for r in mine])]
    covered = 100 * sum(float(r[2]) >= float(r[6]) for r in rows) / len(rows)  # 6 digits in the CSV
    printed = lines[-1].removeprefix("backtest: the actual at or above reserve_mbps ")
    assert printed.endswith(" % of the time (promised: 90 %)")
    assert abs(float(printed.split()[0]) - covered) <= 0.1


def test_backtest_without_models_says_what_is_wrong(tmp_path: Path, sample_traces: list[Path]) -> None:
    done = run_cli("--models", str(tmp_path), "--out", str(tmp_path / "o.csv"), str(sample_traces[0]))
    assert done.returncode == 2
    assert "no manifest.json" in done.stderr


def test_backtest_rejects_a_malformed_trace(tmp_path: Path, tiny_models: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,bw\n0,1\n")
    done = run_cli("--models", str(tiny_models), "--out", str(tmp_path / "o.csv"), str(bad))
    assert done.returncode == 2 and "header must start with" in done.stderr


def test_an_unwritable_output_fails_before_the_replay(
    tmp_path: Path, tiny_models: Path, sample_traces: list[Path]
) -> None:
    """The replay of thousands of traces takes many minutes: a typo in --out must not
    cost them."""
    out = tmp_path / "missing-directory" / "o.csv"
    done = run_cli("--models", str(tiny_models), "--out", str(out), str(sample_traces[0]))
    assert done.returncode == 2 and "missing-directory/o.csv" in done.stderr
    assert "predictions" not in done.stderr  # no progress line: nothing was replayed
