"""ONNX Runtime sessions for the shipped models, checked before they serve.

A model is loaded only if its file's sha256 matches the manifest, ONNX Runtime accepts
it, its input and output shapes fit the contract, and a trial batch gives finite
numbers. Only ONNX files are ever loaded (no pickle or other code-carrying format).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from predictor.features import N_FEATURES
from predictor.manifest import (
    DEFAULT_MODELS_DIR,
    FLOAT,
    OUTPUTS,
    Manifest,
    ManifestError,
    ModelSpec,
    load_manifest,
    sha256_of,
)

log = logging.getLogger(__name__)

#: rows x window steps in one ONNX Runtime call on the CPU (OnnxModel.run splits larger
#: batches): an LSTM call runs fastest while its rows' gate buffers stay in cache, so the
#: rows per call shrink with a longer window. 960 gives datacenter (30 steps) 32 rows and
#: internet (60 steps) 16, the fastest or within noise of it in every case measured
#: (docs/BENCHMARKS.md, tenth session); 128 rows, the size before, ran one-thread
#: datacenter sessions at 15,875 against 21,405 predictions/s.
CELLS_PER_CALL = 960
#: rows per call on the CUDA provider (not measured on a GPU: the size before)
ROWS_PER_CALL_CUDA = 128


class ModelError(RuntimeError):
    """A model could not be loaded or refused to run; the message names file and cause."""


@dataclass(frozen=True)
class SessionSettings:
    """ONNX Runtime settings. Threads default to the host's cores; no busy-spinning, so
    idle inference threads do not steal the CPU from the event loop beside them."""

    intra_op_threads: int = 0  # 0: all cores (on the CPU: that many lanes, OnnxModel)
    precision: str = FLOAT  # or INT8 when the manifest lists that variant
    use_cuda: bool = True  # when onnxruntime has the CUDA provider

    @property
    def threads(self) -> int:
        return self.intra_op_threads or (os.cpu_count() or 1)

    def rows_per_call(self, window: int, provider: str = "CPUExecutionProvider") -> int:
        if provider == "CUDAExecutionProvider":
            return ROWS_PER_CALL_CUDA
        return max(1, CELLS_PER_CALL // window)

    def session_options(self) -> ort.SessionOptions:
        """One intra-op thread: a model's threads are its lanes (OnnxModel)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3
        return options

    def providers(self) -> list[str]:
        available = ort.get_available_providers()
        if self.use_cuda and "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]


class OnnxModel:
    """One verified model: run(features (B, window, F) float32) -> (B, 3) log-ratio quantiles.

    On the CPU it runs in `settings.threads` lanes: sessions of one intra-op thread each,
    a batch's rows shared between them and run side by side (ONNX Runtime releases the
    GIL). One session of two intra-op threads ran 5-15 % fewer predictions per second than
    two lanes (docs/BENCHMARKS.md, eleventh session): it synchronises its threads at every
    step of the LSTM, where lanes meet once per batch, and a thread that another process
    keeps off its core for a moment then holds up every step instead of one join."""

    def __init__(self, spec: ModelSpec, settings: SessionSettings = SessionSettings()) -> None:
        self.spec = spec
        self.path = verified_file(spec, settings.precision)
        self.version = spec.version if settings.precision == FLOAT else (
            f"{spec.version}-{settings.precision}"
        )
        self.sessions = [self._open(settings)]
        provider = self.sessions[0].get_providers()[0]
        if provider == "CPUExecutionProvider":  # a GPU runs a batch as one call
            self.sessions += [self._open(settings) for _ in range(settings.threads - 1)]
        self.rows_per_call = settings.rows_per_call(spec.window, provider)
        self._lanes: ThreadPoolExecutor | None = None
        self._lanes_pid = 0
        self._check_signature()

    def _lane_threads(self) -> ThreadPoolExecutor:
        """The threads of the lanes after the first, started in this process: a forked
        child inherits the pool but none of its threads, and would wait on it forever."""
        if self._lanes is None or self._lanes_pid != os.getpid():
            self._lanes = ThreadPoolExecutor(len(self.sessions) - 1,
                                             thread_name_prefix=f"pba-{self.spec.mode}-lane")
            self._lanes_pid = os.getpid()
        return self._lanes

    def _open(self, settings: SessionSettings) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(str(self.path), sess_options=settings.session_options(),
                                        providers=settings.providers())
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"ONNX Runtime cannot load {self.spec.mode} model {self.path}: {exc}") from None

    def _check_signature(self) -> None:
        session = self.sessions[0]
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        if self.spec.input_name not in inputs or self.spec.output_name not in outputs:
            raise ModelError(
                f"{self.path}: expected input {self.spec.input_name!r} and output "
                f"{self.spec.output_name!r}, found inputs {list(inputs)} outputs {list(outputs)}"
            )
        shape = inputs[self.spec.input_name].shape
        if len(shape) != 3 or shape[1:] != [self.spec.window, N_FEATURES]:
            raise ModelError(
                f"{self.path}: input shape {shape} does not match "
                f"(batch, {self.spec.window}, {N_FEATURES}) from the manifest"
            )
        trial = self.run(np.zeros((2, self.spec.window, N_FEATURES), dtype=np.float32))
        if trial.shape != (2, len(OUTPUTS)) or not np.isfinite(trial).all():
            raise ModelError(f"{self.path}: a trial batch gave {trial.shape} / non-finite output")

    def run(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Outputs for any number of rows: shared evenly between the lanes, each lane's in
        calls of at most rows_per_call (why that many: CELLS_PER_CALL), the calling thread
        running the first lane. No rows, no call (ONNX Runtime aborts the process on an
        empty batch)."""
        if features.shape[0] == 0:
            return np.empty((0, len(OUTPUTS)), dtype=np.float32)
        parts = np.array_split(features, min(len(self.sessions), features.shape[0]))
        if len(parts) == 1:
            return self._run_lane(parts[0], self.sessions[0])
        lanes = self._lane_threads()
        others = [lanes.submit(self._run_lane, part, session)
                  for part, session in zip(parts[1:], self.sessions[1:], strict=True)]
        first = self._run_lane(parts[0], self.sessions[0])
        return np.concatenate([first, *(lane.result() for lane in others)])

    def _run_lane(self, features: npt.NDArray[np.float32],
                  session: ort.InferenceSession) -> npt.NDArray[np.float32]:
        """The rows in calls shared evenly: a short last call costs nearly a full one's
        overhead (140 rows as 70 + 70 ran 21-22 % faster than as 128 + 12)."""
        n = features.shape[0]
        if n <= self.rows_per_call:
            return self.run_call(features, session)
        calls = -(-n // self.rows_per_call)
        return np.concatenate([self.run_call(part, session) for part in np.array_split(features, calls)])

    def run_call(self, features: npt.NDArray[np.float32],
                 session: ort.InferenceSession | None = None) -> npt.NDArray[np.float32]:
        """One ONNX Runtime call on all the rows given (on the first lane's session unless
        another is given)."""
        (out,) = (session or self.sessions[0]).run([self.spec.output_name], {self.spec.input_name: features})
        return np.asarray(out, dtype=np.float32).reshape(features.shape[0], -1)


@dataclass
class ModelSet:
    """The models available to serve, by mode name, and why any are missing."""

    models: dict[str, OnnxModel]
    manifest: Manifest | None
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def fallback_active(self) -> bool:
        return bool(self.unavailable)


def verified_file(spec: ModelSpec, precision: str = FLOAT) -> Path:
    """The model file of `precision`, once it exists and its sha256 is the manifest's:
    a file changed or corrupted after training is never served (nor trained further)."""
    path, expected = spec.file_for(precision)
    if not path.is_file():
        raise ModelError(f"{spec.mode} model file {path} does not exist")
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise ModelError(f"cannot read {spec.mode} model file {path}: {exc.strerror or exc}") from None
    if actual != expected:
        raise ModelError(
            f"{spec.mode} model {path} has sha256 {actual}, manifest says {expected}: "
            "the file was changed or corrupted; refusing to load it"
        )
    return path


def load_models(
    directory: Path | str | None = None,
    modes: tuple[str, ...] = ("datacenter", "internet"),
    settings: SessionSettings = SessionSettings(),
    allow_fallback: bool = False,
) -> ModelSet:
    """Load the models the given modes need.

    Without allow_fallback any problem raises (ManifestError / ModelError) so the service
    refuses to start. With it, each problem is logged as a loud warning, recorded in
    `unavailable`, and that mode is served by the heuristic fallback.
    """
    directory = Path(directory) if directory is not None else DEFAULT_MODELS_DIR
    unavailable: dict[str, str] = {}
    try:
        manifest: Manifest | None = load_manifest(directory)
    except ManifestError as exc:
        if not allow_fallback:
            raise
        manifest = None
        unavailable = {mode: str(exc) for mode in modes}
    models: dict[str, OnnxModel] = {}
    for mode in modes if manifest is not None else ():
        assert manifest is not None
        try:
            if mode not in manifest.models:
                raise ManifestError(f"{directory}: manifest lists no {mode} model")
            models[mode] = OnnxModel(manifest.models[mode], settings)
        except (ManifestError, ModelError) as exc:
            if not allow_fallback:
                raise
            unavailable[mode] = str(exc)
    for mode, reason in unavailable.items():
        log.warning("FALLBACK ACTIVE: %s predictions use the heuristic: %s", mode, reason)
    return ModelSet(models, manifest, unavailable)


def cpu_description(cpuinfo: str | None = None) -> str:
    """The cores and CPU a speed figure was measured on, and whether it has the VNNI
    instructions int8 kernels need to run faster than float: without them the int8
    models run at float's speed or below (docs/MODEL_CARD.md on such a machine)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as fh:
                cpuinfo = fh.read()
        except OSError:
            cpuinfo = ""
    fields = {key.strip(): value.strip()
              for key, value in (line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)}
    flags = set(fields.get("flags", "").split())
    vnni = ("AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-VNNI" if "avx_vnni" in flags
            else "no VNNI" if flags else "instruction sets unknown")
    return f"{os.cpu_count()} cores, {fields.get('model name', 'unknown CPU')}, {vnni}"
