"""Where the real traces are found when no --traces says, for every command that reads
them (pba train, the model card, the demo, the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.traces import default_traces_dir


def test_the_default_is_shared_traces_beside_the_checkout_from_any_working_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PBA_TRACES_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    checkout = Path(__file__).resolve().parents[2]
    assert default_traces_dir() == checkout.parent / "shared" / "traces"


def test_pba_traces_dir_points_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PBA_TRACES_DIR", str(tmp_path))
    assert default_traces_dir() == tmp_path
