"""Feature flags: FNV-1a rollout buckets, validation, hot reload keeping good flags."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from consumer.flags import Flags, FlagsError, FlagsFile, fnv1a_32, parse_flags, rollout_bucket


def test_fnv1a_matches_the_reference_vectors() -> None:
    assert fnv1a_32("") == 0x811C9DC5
    assert fnv1a_32("a") == 0xE40C292C
    assert fnv1a_32("foobar") == 0xBF9CF968


def test_rollout_buckets_spread_evenly() -> None:
    buckets = [rollout_bucket(f"link-{i}") for i in range(20_000)]
    share = sum(b < 25 for b in buckets) / len(buckets)
    assert 0.23 < share < 0.27


def test_flags_are_validated() -> None:
    assert parse_flags({"rollout_percent": 10, "shadow": True}) == Flags(10, False, True, None)
    with pytest.raises(FlagsError, match="rollout_percent"):
        parse_flags({"rollout_percent": 150})
    with pytest.raises(FlagsError, match="unknown flag"):
        parse_flags({"rolout": 1})
    with pytest.raises(FlagsError, match="kill_switch must be true or false"):
        parse_flags({"kill_switch": "yes"})


def test_file_reloads_on_change_and_keeps_old_flags_on_a_bad_edit_or_an_unreadable_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "flags.toml"
    path.write_text("rollout_percent = 10\n")
    flags = FlagsFile(path)
    assert flags.flags.rollout_percent == 10 and flags.poll() is None
    path.write_text("rollout_percent = 50\nkill_switch = true\n")
    os.utime(path, (1, 1))
    assert flags.poll() is True and flags.flags.kill_switch
    path.write_text("rollout_percent = 'lots'\n")
    os.utime(path, (2, 2))
    assert flags.poll() is False
    assert flags.flags.rollout_percent == 50
    path.unlink()
    path.mkdir()  # replaced by something that cannot be read as a file
    assert flags.poll() is False
    assert flags.flags.rollout_percent == 50
