"""How a new link's first window of samples is best served: the experiment behind
features.repeat_history and modes.MODEL_MIN_SAMPLES (docs/ADAPTATION.md, "The models
from the tenth sample").

    python scripts/warm-up-experiments.py [validation|test] [MODELS_DIR]

For every trace of the group and every c from 2 to 59 samples seen, the internet model's
point forecast of sample c from samples 0..c-1, on the window filled three ways: the
history repeated back in time (what ships), its first sample held, the history mirrored.
Prints, per source and for bands of c, each one's +/-20 % hit rate minus the last value's
on the same rows, and the macro gain over the last value of letting the models serve
from c >= K on, per K, counted over all of the group's walk-forward rows (so it is what
the macro hit rate of the model card would move by, had the gate kept the last value
in warm-up). Research code: the figures that count come from `make model-card`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from predictor.confidence import hits
from predictor.features import BANDWIDTH, build_features, from_log_ratio, repeat_history
from predictor.manifest import DEFAULT_MODELS_DIR
from predictor.runtime import load_models
from training.dataset import raw_series
from training.traces import cut, default_traces_dir, load_traces, split_traces

W = 60
BANDS = ((2, 5), (5, 10), (10, 20), (20, 40), (40, 60))


def held(raw: np.ndarray, c: int) -> np.ndarray:
    out = raw.copy()
    out[:W - c] = raw[W - c]
    return out


def mirrored(raw: np.ndarray, c: int) -> np.ndarray:
    period = max(2 * (c - 1), 1)
    at = np.mod(np.arange(-(W - c), c), period)
    return raw[W - c:][np.where(at >= c, period - at, at)]


def main(role: str = "validation", models_dir: str | None = None) -> None:
    model = load_models(Path(models_dir or DEFAULT_MODELS_DIR), ("internet",)).models["internet"]
    infos, read = load_traces(default_traces_dir())
    windows, source, seen, actual, total = [], [], [], [], {}
    for segment in split_traces(infos)[role]:
        series = raw_series(cut(read(segment.info), segment))
        total[segment.info.source] = total.get(segment.info.source, 0) + max(len(series) - 1, 0)
        for c in range(2, min(W, len(series))):
            window = np.full((W, series.shape[1]), np.nan, dtype=np.float32)
            window[W - c:] = series[:c]
            windows.append(window)
            source.append(segment.info.source)
            seen.append(c)
            actual.append(series[c, BANDWIDTH])
    raw, src, c, a = np.stack(windows), np.array(source), np.array(seen), np.array(actual, dtype=np.float64)
    fills = {"repeated": repeat_history(raw, c),
             "held": np.stack([held(w, k) for w, k in zip(raw, c, strict=True)]),
             "mirrored": np.stack([mirrored(w, k) for w, k in zip(raw, c, strict=True)])}
    last = hits(raw[:, -1, BANDWIDTH].astype(np.float64), a).astype(np.float64)
    gain = {}
    for name, filled in fills.items():
        features, scale = build_features(filled, W)
        gain[name] = hits(from_log_ratio(model.run(features)[:, 1], scale).astype(np.float64), a) - last
    sources = sorted(total)
    print(f"{role}: hit20 minus the last value's, points, by source ({', '.join(sources)})")
    for name, g in gain.items():
        for lo, hi in BANDS:
            per = [100 * g[(src == s) & (c >= lo) & (c < hi)].mean() for s in sources]
            print(f"  {name:9s} c {lo:2d}-{hi:2d}: macro {np.nanmean(per):+5.2f}  "
                  + " ".join(f"{p:+5.1f}" for p in per))
    print("the models from the K-th sample on, repeated history: macro gain over the last value, points")
    g = gain["repeated"]
    by_k = {k: np.mean([100 * g[(src == s) & (c >= k)].sum() / total[s] for s in sources])
            for k in (5, 10, 15, 20, 30, 40)}
    print("  " + "  ".join(f"K {k}: {v:+.3f}" for k, v in by_k.items()))


if __name__ == "__main__":
    main(*sys.argv[1:])
