"""Model loading: a missing, corrupt or mismatched model is refused with a clear error,
or, with fallback allowed, reported and replaced by the heuristic, never a constant."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import orjson
import pytest

from predictor.manifest import MANIFEST_NAME, ManifestError, load_manifest
from predictor.runtime import (
    CELLS_PER_CALL,
    ROWS_PER_CALL_CUDA,
    ModelError,
    SessionSettings,
    cpu_description,
    load_models,
)


@pytest.fixture
def models_copy(tiny_models: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models"
    shutil.copytree(tiny_models, target)
    return target


def edit_manifest(directory: Path, mode: str, **changes: object) -> None:
    path = directory / MANIFEST_NAME
    manifest = orjson.loads(path.read_bytes())
    manifest["models"][mode].update(changes)
    path.write_bytes(orjson.dumps(manifest))


def test_shipped_form_loads_both_models(tiny_models: Path) -> None:
    models = load_models(tiny_models)
    assert set(models.models) == {"datacenter", "internet"}
    assert not models.fallback_active
    assert models.models["internet"].version == "internet-tiny-test"


def test_a_tampered_model_file_is_refused(models_copy: Path) -> None:
    path = models_copy / "internet-tiny.onnx"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 .* refusing to load"):
        load_models(models_copy)


def test_a_corrupt_model_with_a_matching_hash_is_refused(models_copy: Path) -> None:
    from predictor.manifest import sha256_of

    path = models_copy / "datacenter-tiny.onnx"
    path.write_bytes(b"this is not an onnx model")
    edit_manifest(models_copy, "datacenter", sha256=sha256_of(path))
    with pytest.raises(ModelError, match="ONNX Runtime cannot load datacenter model"):
        load_models(models_copy)


class _WritesAMarker:
    """Unpickling this would run code: it creates the file it names."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_a_pickle_in_place_of_a_model_is_never_unpickled(models_copy: Path, tmp_path: Path) -> None:
    """Only ONNX is ever parsed: a pickle with a matching hash is refused, its code not run."""
    import pickle

    from predictor.manifest import sha256_of

    marker = tmp_path / "code-ran"
    path = models_copy / "internet-tiny.onnx"
    path.write_bytes(pickle.dumps(_WritesAMarker(marker)))
    edit_manifest(models_copy, "internet", sha256=sha256_of(path))
    with pytest.raises(ModelError, match="ONNX Runtime cannot load internet model"):
        load_models(models_copy)
    assert not marker.exists()


def test_a_model_for_another_feature_set_is_refused(models_copy: Path) -> None:
    edit_manifest(models_copy, "internet", features=["bandwidth_mbps"])
    with pytest.raises(ManifestError, match="features .* retrain"):
        load_manifest(models_copy)


def test_a_window_mismatch_is_refused(models_copy: Path) -> None:
    edit_manifest(models_copy, "datacenter", window=10)
    with pytest.raises(ManifestError, match="window is 10"):
        load_manifest(models_copy)


def test_a_file_outside_the_models_directory_is_refused(models_copy: Path) -> None:
    edit_manifest(models_copy, "datacenter", file="../../etc/passwd")
    with pytest.raises(ManifestError, match="plain file name"):
        load_manifest(models_copy)


def test_a_missing_manifest_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest.json .* `pba train`"):
        load_models(tmp_path)


def test_unreadable_files_are_refused_with_the_errors_a_reload_handles(
    models_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permissions (or a file vanishing mid-read) give ManifestError / ModelError, which a
    hot reload turns into "refused, keeping the running models", never an OSError."""
    import predictor.runtime

    def denied(*_: object) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(predictor.runtime, "sha256_of", denied)
    with pytest.raises(ModelError, match="cannot read (datacenter|internet) model file .*: Permission"):
        load_models(models_copy)
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ManifestError, match="cannot read .*manifest.json: Permission denied"):
        load_models(models_copy)


def test_with_fallback_a_broken_model_is_loud_and_recorded(
    models_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (models_copy / "internet-tiny.onnx").unlink()
    with caplog.at_level(logging.WARNING):
        models = load_models(models_copy, allow_fallback=True)
    assert set(models.models) == {"datacenter"}
    assert "does not exist" in models.unavailable["internet"]
    assert models.fallback_active
    assert "FALLBACK ACTIVE: internet" in caplog.text


def test_missing_variant_is_named(tiny_models: Path) -> None:
    with pytest.raises(ManifestError, match="no 'int8' variant"):
        load_models(tiny_models, settings=SessionSettings(precision="int8"))


def test_sessions_do_not_busy_spin_and_have_one_thread_each() -> None:
    options = SessionSettings(intra_op_threads=2).session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 1  # a model's threads are its lanes


def test_a_batch_is_shared_between_the_lanes_in_even_calls_of_limited_size(
    tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_models(tiny_models, ("internet",), SessionSettings(intra_op_threads=2)).models["internet"]
    assert len(model.sessions) == 2 and model.rows_per_call == CELLS_PER_CALL // 60
    features = np.random.default_rng(0).normal(size=(model.rows_per_call * 4 + 10, 60, 11)).astype(np.float32)
    calls: list[tuple[int, int, str]] = []
    run_call = model.run_call

    def counted(x: np.ndarray, session: object = None) -> np.ndarray:
        lane = model.sessions.index(session or model.sessions[0])
        calls.append((len(x), lane, threading.current_thread().name))
        return run_call(x, session)  # type: ignore[arg-type]

    monkeypatch.setattr(model, "run_call", counted)
    out = model.run(features)
    assert sum(n for n, _, _ in calls) == len(features) and len(calls) == 6
    assert max(n for n, _, _ in calls) <= model.rows_per_call
    assert max(n for n, _, _ in calls) - min(n for n, _, _ in calls) <= 1  # shared evenly: no short last call
    assert {lane for _, lane, _ in calls} == {0, 1}  # both lanes served it
    assert len({thread for _, _, thread in calls}) == 2  # each on a thread of its own, side by side
    np.testing.assert_allclose(out, run_call(features), rtol=1e-5, atol=1e-5)


def test_a_single_row_runs_on_one_lane_and_no_rows_on_none(
    tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_models(tiny_models, ("internet",), SessionSettings(intra_op_threads=2)).models["internet"]
    calls: list[int] = []
    run_call = model.run_call
    monkeypatch.setattr(model, "run_call",
                        lambda x, session=None: calls.append(len(x)) or run_call(x, session))
    one = np.zeros((1, 60, 11), dtype=np.float32)
    assert model.run(one).shape == (1, 3) and calls == [1]
    assert model.run(one[:0]).shape == (0, 3) and calls == [1]  # ONNX Runtime would abort on it


def test_rows_per_call_shrink_with_the_window() -> None:
    one, two = SessionSettings(intra_op_threads=1), SessionSettings(intra_op_threads=2)
    assert (one.rows_per_call(30), one.rows_per_call(60)) == (32, 16)  # datacenter, internet
    assert (two.rows_per_call(30), two.rows_per_call(60)) == (32, 16)  # per lane: threads add lanes
    assert one.rows_per_call(2000) == 1
    assert two.rows_per_call(30, "CUDAExecutionProvider") == ROWS_PER_CALL_CUDA


def test_a_rows_outputs_do_not_depend_on_its_call_or_the_threads(tiny_models: Path) -> None:
    """Rows per call follow the threads, so a member of another thread count (after a
    rebalance or a restart) must predict the very same bits for the same window."""
    features = np.random.default_rng(1).normal(size=(150, 60, 11)).astype(np.float32)
    outputs = []
    for threads in (1, 2):
        settings = SessionSettings(intra_op_threads=threads)
        model = load_models(tiny_models, ("internet",), settings).models["internet"]
        outputs += [model.run(features), model.run_call(features), model.run_call(features[:1])]
    for out in outputs:
        np.testing.assert_array_equal(out, outputs[0][: len(out)])


def test_a_forked_child_runs_the_lanes_it_inherited(tiny_models: Path) -> None:
    """A child forked after the lanes ran (e.g. a pre-forking server around predictor.api)
    gets the pool but none of its threads: it must start its own, not wait forever."""
    model = load_models(tiny_models, ("internet",), SessionSettings(intra_op_threads=2)).models["internet"]
    features = np.random.default_rng(2).normal(size=(40, 60, 11)).astype(np.float32)
    expected = model.run(features)  # the parent's lane thread exists now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: exits without returning into pytest
        try:
            os.write(write, model.run(features).tobytes())
        finally:
            os._exit(0)
    os.close(write)
    got = b""
    with os.fdopen(read, "rb") as pipe:
        for chunk in iter(lambda: pipe.read(1 << 16), b""):
            got += chunk
    os.waitpid(pid, 0)
    np.testing.assert_array_equal(np.frombuffer(got, dtype=np.float32).reshape(expected.shape), expected)


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu avx2 avx512f avx512_vnni", "AVX-512 VNNI"),
    ("fpu avx2 avx_vnni", "AVX-VNNI"),
    ("fpu avx avx2 bmi2", "no VNNI"),
])
def test_a_speed_figure_names_the_cpu_and_whether_int8_can_be_faster_on_it(flags: str, expected: str) -> None:
    cpuinfo = f"processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
    assert cpu_description(cpuinfo).endswith(f" cores, AMD EPYC 7B13, {expected}")


def test_a_cpu_that_says_nothing_is_described_as_unknown() -> None:
    assert cpu_description("").endswith(" cores, unknown CPU, instruction sets unknown")
