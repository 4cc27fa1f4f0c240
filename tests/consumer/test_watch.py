"""DirectoryWatch: a change is reported once, and only after the files stop changing."""

from __future__ import annotations

import os
from pathlib import Path

from consumer.watch import DirectoryWatch


def touch(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_nothing_changed_is_not_a_change(tmp_path: Path) -> None:
    touch(tmp_path / "manifest.json", "{}", 1_000)
    watch = DirectoryWatch(tmp_path)
    assert [watch.settled_change() for _ in range(3)] == [False, False, False]


def test_a_change_is_reported_once_after_one_look_without_further_change(tmp_path: Path) -> None:
    touch(tmp_path / "manifest.json", "{}", 1_000)
    watch = DirectoryWatch(tmp_path)
    touch(tmp_path / "manifest.json", '{"v": 2}', 2_000)
    assert [watch.settled_change() for _ in range(3)] == [False, True, False]


def test_a_copy_in_progress_waits_until_its_last_file_has_landed(tmp_path: Path) -> None:
    touch(tmp_path / "manifest.json", "{}", 1_000)
    touch(tmp_path / "internet.onnx", "old", 1_000)
    watch = DirectoryWatch(tmp_path)
    touch(tmp_path / "manifest.json", '{"v": 2}', 2_000)  # the manifest first
    assert not watch.settled_change()
    touch(tmp_path / "internet.onnx", "new model", 3_000)  # its model a moment later
    assert not watch.settled_change()
    assert watch.settled_change()


def test_each_settled_change_is_reported_even_when_an_earlier_one_was_refused(tmp_path: Path) -> None:
    touch(tmp_path / "manifest.json", "{}", 1_000)
    watch = DirectoryWatch(tmp_path)
    touch(tmp_path / "manifest.json", "{ broken", 2_000)
    assert [watch.settled_change() for _ in range(2)] == [False, True]  # reloaded and refused
    touch(tmp_path / "manifest.json", '{"fixed": 1}', 3_000)
    assert [watch.settled_change() for _ in range(2)] == [False, True]


def test_files_added_removed_or_behind_a_swapped_link_count_and_directories_do_not(tmp_path: Path) -> None:
    models = tmp_path / "models"
    first, second = tmp_path / "v1", tmp_path / "v2"
    for version, folder in enumerate((first, second), start=1):
        folder.mkdir()
        touch(folder / "manifest.json", f'{{"v": {version}}}', version * 1_000)
    models.mkdir()
    (models / "manifest.json").symlink_to(first / "manifest.json")
    watch = DirectoryWatch(models)
    (models / "subdir").mkdir()
    assert [watch.settled_change() for _ in range(2)] == [False, False]
    (models / "manifest.json").unlink()
    (models / "manifest.json").symlink_to(second / "manifest.json")
    assert [watch.settled_change() for _ in range(2)] == [False, True]
    touch(models / "extra.onnx", "x", 5_000)
    assert [watch.settled_change() for _ in range(2)] == [False, True]
    (models / "extra.onnx").unlink()
    assert [watch.settled_change() for _ in range(2)] == [False, True]


def test_a_missing_directory_is_an_empty_one_not_an_error(tmp_path: Path) -> None:
    watch = DirectoryWatch(tmp_path / "absent")
    assert watch.fingerprint() == frozenset()
    assert not watch.settled_change()
