"""`pba train`: train, export, calibrate and ship the LSTMs.

Data per model: windows from the real traces' *train* groups (a capped, equal share per
source, so 2,000 FCC traces do not drown 11 mahimahi ones) plus series from the
realistic generator of the model's regime. Early stopping and the confidence
calibration use the *validation* groups; the *test* groups are left for the model card.

Loss: training/loss.py.

`--fine-tune` trains the models already in the output directory further, on the same
data, at a rate that decays to zero (training/fine_tune.py).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from predictor.baselines import last_value
from predictor.confidence import Calibration, coefficient_of_variation, fit_calibration, hits
from predictor.features import build_features, from_log_ratio, to_log_ratio
from predictor.manifest import INT8, ModelSpec, load_manifest, sha256_of
from training.calibrate import calibrate, calibrate_adapted
from training.dataset import sliding_windows
from training.export import check_parity, export_onnx, manifest_entry, write_manifest
from training.fine_tune import FINE_TUNE_EPOCHS, FINE_TUNE_LEARNING_RATE, starting_point
from training.gate import GATE_FILE, fit_gate
from training.generators import realistic
from training.loss import loss_terms
from training.model import CONFIGS, BandwidthLSTM, ModelConfig, build_model
from training.traces import Segment, Trace, cut, default_traces_dir, load_traces, split_traces

log = logging.getLogger(__name__)

#: added to --seed for each mode's windows and synthetic series: by the mode, not by its
#: place in --mode's list, so `pba train --mode datacenter` trains the very datacenter
#: model of a `--mode both` run (which trains internet first, and offsets keep its seeds)
SEED_OFFSETS = {"internet": 0, "datacenter": 1}

@dataclass
class TrainSettings:
    modes: tuple[str, ...] = ("datacenter", "internet")
    traces: Path = field(default_factory=default_traces_dir)
    out: Path = Path("predictor/models")
    epochs: int | None = None  # None: each mode's cap (30 / 50)
    patience: int = 10
    batch_size: int = 256
    seed: int = 20261129
    device: str = "cpu"
    windows_per_source: int = 40_000
    synthetic_links: int = 120
    synthetic_length: int = 3_000
    validation_windows_per_source: int = 8_000
    plot: bool = False
    progress: bool = True
    fine_tune: bool = False  # start from the models in `out`; the rate decays to zero
    learning_rate: float | None = None  # None: the mode's own, or FINE_TUNE_LEARNING_RATE
    version: str = field(default_factory=lambda: time.strftime("%Y.%m.%d"))


@dataclass
class Dataset:
    x: np.ndarray  # (m, steps, F) features
    y: np.ndarray  # (m,) log-ratio targets
    scale: np.ndarray  # (m,)
    last: np.ndarray  # (m,) last bandwidth of each window (fallback calibration)
    cv: np.ndarray  # (m,) coefficient of variation of the last 10 samples
    source: np.ndarray  # (m,) source name per window

    def __len__(self) -> int:
        return len(self.y)

    def real_only(self) -> Dataset:
        """Windows from measured traces only: calibration must match real traffic, and the
        generator's easier series would make confidence optimistic."""
        keep = ~np.char.startswith(self.source.astype(str), "synthetic")
        return Dataset(self.x[keep], self.y[keep], self.scale[keep], self.last[keep], self.cv[keep],
                       self.source[keep])


def collect(
    traces: list[tuple[str, Trace]], steps: int, per_source: int, rng: np.random.Generator
) -> Dataset:
    """Windows from (source, trace) pairs, at most `per_source` per source, spread evenly
    over that source's traces."""
    by_source: dict[str, list[Trace]] = {}
    for source, trace in traces:
        if len(trace) > steps:
            by_source.setdefault(source, []).append(trace)
    parts: list[tuple[np.ndarray, ...]] = []
    names: list[np.ndarray] = []
    for source, source_traces in sorted(by_source.items()):
        budget = max(1, per_source // len(source_traces))
        for trace in source_traces:
            windows, nxt = sliding_windows(trace, steps)
            chosen = np.sort(rng.choice(len(windows), min(budget, len(windows)), replace=False))
            x, y, scale = _features(windows[chosen], nxt[chosen], steps)
            bw = windows[chosen][:, :, 0]
            parts.append((x, y, scale, last_value(bw), coefficient_of_variation(bw)))
            names.append(np.full(len(chosen), source))
    if not parts:
        raise ValueError(f"no trace is longer than {steps} samples")
    x, y, scale, last, cv = (np.concatenate(col) for col in zip(*parts, strict=True))
    return Dataset(x, y, scale, last, cv, np.concatenate(names))


def _features(windows: np.ndarray, nxt: np.ndarray, steps: int) -> tuple[np.ndarray, ...]:
    x, scale = build_features(windows, steps)
    y = to_log_ratio(nxt, scale)
    return x, y, scale


def fit(
    config: ModelConfig,
    train: Dataset,
    valid: Dataset,
    settings: TrainSettings,
    model: BandwidthLSTM | None = None,
) -> tuple[BandwidthLSTM, list[dict[str, float]]]:
    """Adam, early stopping on validation loss (restores the best weights). From scratch
    at the mode's constant learning rate; a fine-tune (settings.fine_tune, `model` the
    one to start from) at settings' rate with a cosine decay to zero over the epochs.
    Seeded: the same data and seed give the same weights on CPU."""
    torch.manual_seed(settings.seed)
    device = torch.device(settings.device)
    model = (model or build_model(config)).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate(config, settings))
    x_tr = torch.from_numpy(train.x).to(device)
    y_tr = torch.from_numpy(train.y).to(device)
    x_va = torch.from_numpy(valid.x).to(device)
    y_va = torch.from_numpy(valid.y).to(device)
    generator = torch.Generator().manual_seed(settings.seed)
    epochs = epoch_cap(config, settings)
    steps = epochs * math.ceil(len(y_tr) / settings.batch_size)
    schedule = None
    best_loss, best_state, stale = float("inf"), None, 0
    if settings.fine_tune:  # the model it starts from is the one to beat
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
        best_loss, best_state = evaluate_loss(model, x_va, y_va, settings.batch_size * 8), _snapshot(model)
        log.info("%s: fine-tuning from validation loss %.4f", config.mode, best_loss)
    history: list[dict[str, float]] = []
    bar = _progress(range(epochs), f"{config.mode}", settings.progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(y_tr), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            optimiser.zero_grad()
            loss = loss_terms(model(x_tr[idx]), y_tr[idx]).mean()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            if schedule is not None:
                schedule.step()
            total += loss.item() * len(idx)
        val_loss = evaluate_loss(model, x_va, y_va, settings.batch_size * 8)
        improved = val_loss < best_loss - 1e-5
        history.append({"epoch": epoch + 1, "train_loss": total / len(y_tr), "val_loss": val_loss,
                        "learning_rate": optimiser.param_groups[0]["lr"], "improved": improved})
        log.info("%s epoch %d: train loss %.4f, validation loss %.4f",
                 config.mode, epoch + 1, total / len(y_tr), val_loss)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(train=f"{total / len(y_tr):.4f}", val=f"{val_loss:.4f}")
        if improved:
            best_loss, stale = val_loss, 0
            best_state = _snapshot(model)
        else:
            stale += 1
            if stale >= settings.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.cpu().eval(), history


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def learning_rate(config: ModelConfig, settings: TrainSettings) -> float:
    if settings.learning_rate is not None:
        return settings.learning_rate
    return FINE_TUNE_LEARNING_RATE if settings.fine_tune else config.learning_rate


def epoch_cap(config: ModelConfig, settings: TrainSettings) -> int:
    if settings.epochs:
        return settings.epochs
    return FINE_TUNE_EPOCHS if settings.fine_tune else config.max_epochs


@torch.no_grad()
def evaluate_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    model.eval()
    total = 0.0
    for start in range(0, len(y), batch):
        total += float(loss_terms(model(x[start:start + batch]), y[start:start + batch]).sum())
    return total / max(len(y), 1)


def _progress(iterable: Any, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=f"train {desc}", unit="epoch")


def calibrate_fallback(valid: Dataset) -> Calibration:
    """The fallback (last value) scored by the recent coefficient of variation."""
    actual = from_log_ratio(valid.y, valid.scale)
    return fit_calibration(valid.cv, hits(valid.last, actual), "cv")


def quantise_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of weights (LSTM and MatMul), activations stay float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def read_segments(segments: list[Segment], read: Any) -> list[tuple[str, Trace]]:
    """(source, trace) for each segment, read from disk once."""
    return [(s.info.source, cut(read(s.info), s)) for s in segments]


def gather(
    real: list[tuple[str, Trace]], synthetic: list[Trace], regime: str
) -> list[tuple[str, Trace]]:
    return real + [(f"synthetic-{regime}", t) for t in synthetic]


def synthetic_traces(regime: str, links: int, length: int, seed: int) -> list[Trace]:
    rng = np.random.default_rng(seed)
    return [realistic(regime, length, rng, name=f"train{k:03d}") for k in range(links)]


def run(settings: TrainSettings) -> Path:
    """Train every requested mode, export, calibrate, quantise, write the manifest."""
    # a fine-tune with nothing to start from fails before minutes of reading traces
    starts = {m: starting_point(settings.out, m) for m in settings.modes} if settings.fine_tune else {}
    infos, read = load_traces(settings.traces)
    roles = split_traces(infos)
    train_real = read_segments(roles["train"], read)
    validation_real = read_segments(roles["validation"], read)
    validation_traces = [trace for _, trace in validation_real]
    settings.out.mkdir(parents=True, exist_ok=True)
    before = _existing_entries(settings.out)
    entries = {m: e for m, e in before.items() if m not in settings.modes}
    fallback_cal = None
    for mode in settings.modes:
        config = CONFIGS[mode]
        k = SEED_OFFSETS[mode]
        rng = np.random.default_rng(settings.seed + k)
        syn_train = synthetic_traces(mode, settings.synthetic_links, settings.synthetic_length,
                                     settings.seed + 100 + k)
        syn_valid = synthetic_traces(mode, max(settings.synthetic_links // 4, 1),
                                     settings.synthetic_length, settings.seed + 200 + k)
        train = collect(gather(train_real, syn_train, mode), config.window,
                        settings.windows_per_source, rng)
        valid = collect(gather(validation_real, syn_valid, mode), config.window,
                        settings.validation_windows_per_source, rng)
        log.info("%s: %d training and %d validation windows", mode, len(train), len(valid))
        if fallback_cal is None:
            fallback_cal = calibrate_fallback(valid.real_only())
        start, base = starts.get(mode, (None, None))
        model, history = fit(config, train, valid, settings, start)
        if settings.fine_tune and not any(h["improved"] for h in history):
            log.warning("%s: no epoch beat the model the fine-tune started from on validation; "
                        "it stays as it was (%s)", mode, before[mode]["version"])
            entries[mode] = before[mode]
            continue
        path = settings.out / f"{mode}.onnx"
        export_onnx(model, path, config.window)
        check_parity(model, path, valid.x[:256])
        int8_path = settings.out / f"{mode}.int8.onnx"
        quantise_int8(path, int8_path)
        calibration, fit_stats = calibrate(_spec(mode, path, config.window), validation_traces)
        entries[mode] = manifest_entry(
            mode, path, f"{mode}-{settings.version}", config.window, calibration,
            variants={INT8: int8_path},
            extra={"training": {
                "seed": settings.seed, "epochs_run": len(history),
                "best_val_loss": min(h["val_loss"] for h in history),
                "train_windows": len(train), "validation_windows": len(valid),
                "batch_size": settings.batch_size, "learning_rate": learning_rate(config, settings),
                "lstm_units": list(config.lstm_units), "dropout": config.dropout,
                "point_loss": "hit window",  # absent: the kernel centred on the actual
                **({"fine_tuned_from": base} if base else {}),
                **fit_stats,
            }},
        )
        # written after each mode, so a long run that is stopped keeps what it finished
        write_manifest(settings.out, entries, fallback_cal)
        _save_history(settings.out, mode, history, extend=settings.fine_tune)
        if settings.plot:
            from training.plots import plot_training

            plot_training(settings.out / "plots", mode, history, model, valid)
    return _with_adapted_calibration(settings, entries, fallback_cal, validation_traces)


def recalibrate(settings: TrainSettings) -> Path:
    """Refit the confidence calibration of the models in `settings.out` on the real
    validation groups, without retraining (the model files and their hashes stay)."""
    import orjson

    infos, read = load_traces(settings.traces)
    roles = split_traces(infos)
    manifest = load_manifest(settings.out)
    data = orjson.loads((settings.out / "manifest.json").read_bytes())
    validation_real = read_segments(roles["validation"], read)
    validation_traces = [trace for _, trace in validation_real]
    fallback_cal = None
    for mode, spec in manifest.models.items():
        k = SEED_OFFSETS[mode]
        calibration, stats = calibrate(spec, validation_traces)
        data["models"][mode]["calibration"] = calibration.to_dict()
        data["models"][mode].setdefault("training", {}).update(stats)
        log.info("%s: recalibrated on %d walk-forward validation rows (hit rate %.3f)", mode,
                 stats["calibration_rows"], stats["validation_hit_rate"])
        if fallback_cal is None:
            rng = np.random.default_rng(settings.seed + k)
            valid = collect(validation_real, spec.window,
                            settings.validation_windows_per_source, rng)
            fallback_cal = calibrate_fallback(valid)
    write_manifest(settings.out, data["models"], fallback_cal)
    return _with_adapted_calibration(settings, data["models"], fallback_cal, validation_traces)


def _with_adapted_calibration(settings: TrainSettings, entries: dict[str, dict[str, Any]],
                              fallback: Calibration | None, validation: list[Trace]) -> Path:
    """The manifest again, with the adaptation's gate (training/gate.py) and then its
    calibration (training/calibrate.py) fitted on the models just written: the
    calibration maps what the gate publishes."""
    out = settings.out
    gate, stats = fit_gate(out, validation, settings.seed)
    gate_path = out / GATE_FILE
    gate.save(gate_path)
    log.info("adaptation gate: fitted on %d walk-forward validation rows (hit rate %.3f, the last "
             "value's %.3f)", stats["gate_rows"], stats["gate_validation_hit_rate"],
             stats["last_value_validation_hit_rate"])
    write_manifest(out, entries, fallback, None, gate_path)
    adapted, stats = calibrate_adapted(out, validation)
    log.info("adapted output: calibrated on %d walk-forward validation rows (hit rate %.3f)",
             stats["adapted_rows"], stats["adapted_validation_hit_rate"])
    return write_manifest(out, entries, fallback, adapted, gate_path)


def _spec(mode: str, path: Path, window: int) -> ModelSpec:
    """A spec for the freshly exported model, before its calibration exists."""
    return ModelSpec(mode, path, sha256_of(path), f"{mode}-uncalibrated", window, "input", "output",
                     Calibration("none", (0.0,), (0.5,)))


def _existing_entries(out: Path) -> dict[str, dict[str, Any]]:
    """The manifest entries already in `out`: those of modes not trained this time stay
    (e.g. --mode internet), as does a fine-tune's starting model that no epoch beat."""
    import orjson

    path = out / "manifest.json"
    if not path.is_file():
        return {}
    data = orjson.loads(path.read_bytes())
    return dict(data.get("models", {}))


def _save_history(out: Path, mode: str, epochs: list[dict[str, float]], extend: bool) -> None:
    """A mode's epochs; a fine-tune's follow those of the training it started from."""
    import orjson

    path = out / "training-history.json"
    old = orjson.loads(path.read_bytes()) if path.is_file() else {}
    before = old.get(mode, []) if extend else []
    old[mode] = before + [{**e, "epoch": len(before) + e["epoch"], "fine_tune": extend} for e in epochs]
    path.write_bytes(orjson.dumps(old, option=orjson.OPT_INDENT_2))

