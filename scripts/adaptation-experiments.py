"""The experiments behind predictor/adaptation.py: per-link expert selection, reserve and
confidence designs, simulated offline on the shipped models' walk-forward outputs.

    python scripts/adaptation-experiments.py cache [MODELS_DIR]  # replay validation + test groups once
    python scripts/adaptation-experiments.py sweep               # the designs compared (seconds each)
    python scripts/adaptation-experiments.py scale               # the models' point times 0.94..1.02
    python scripts/adaptation-experiments.py gate [MODELS_DIR]   # the trained gate, as training fits it

`cache` replays the traces' validation and test groups through the service's link
predictor with the adaptation off (the models' own forecasts, as served in auto mode)
and keeps them in $PBA_EXPERIMENTS (default /tmp/pba-adaptation); MODELS_DIR (default
the shipped predictor/models) replays other models, e.g. a fine-tune's. `sweep` then runs
each design over those forecasts, sample by sample per trace, and prints, per design,
the macro hit rate over the last value, the worst source against the best simple
baseline and the reserve coverage by source. This is research code, a simulation of
the designs; the shipped design is predictor/adaptation.py, and the figures that count
come from replaying through it (docs/MODEL_CARD.md). docs/ADAPTATION.md has the results.
`gate` is not a simulation: it replays both groups through the service's own adaptation
(training.gate.gate_rows, kept in $PBA_EXPERIMENTS/gate-*.npz) and fits the gate as
`pba train` does, on half of the validation traces (checked on the other half, and the
other way round) and on all of them (checked on the test groups).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from predictor.baselines import REPORTED_BASELINES, ewma, harmonic_mean, last_value, walk_forward

CACHE = Path(os.environ.get("PBA_EXPERIMENTS", "/tmp/pba-adaptation"))

FALLBACK = 3
W = 60


def load(role: str) -> dict:
    d = dict(np.load(CACHE / f"{role}.npz", allow_pickle=True))
    d["offsets"] = np.concatenate([[0], np.cumsum(d["lengths"])[:-1]])
    return d


def window_experts(bw: np.ndarray) -> dict[str, np.ndarray]:
    """Simple experts after each sample i (i = 0..n-1) from the last W samples."""
    padded = np.concatenate([np.full(W - 1, np.nan), bw.astype(np.float64)])
    win = sliding_window_view(padded, W)
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            med5 = np.nanmedian(win[:, -5:], axis=1)
            med3 = np.nanmedian(win[:, -3:], axis=1)
    return {
        "last": last_value(win), "ewma0.1": ewma(win, 0.1), "ewma0.3": ewma(win, 0.3),
        "ewma0.6": ewma(win, 0.6), "hm5": harmonic_mean(win, 5), "med5": med5, "med3": med3,
    }


def experts_of(d: dict) -> tuple[list[str], np.ndarray]:
    parts = {}
    for o, n in zip(d["offsets"], d["lengths"], strict=True):
        for name, v in window_experts(d["bw"][o:o + n]).items():
            parts.setdefault(name, []).append(v)
    names = list(parts)
    return names, np.stack([np.concatenate(parts[n]) for n in names], axis=1)


@dataclass
class Config:
    experts: tuple[str, ...] = ("lstm", "last", "ewma0.1", "ewma0.3", "ewma0.6", "hm5", "med5", "lstm_corr")
    decay: float = 0.95
    prior: float = 2.0  # head start of the LSTM, in hits
    prior_corr: float = 1.0
    beta: float = 0.05  # residual bias gain
    gamma: float = 0.02  # ACI step
    alpha: float = 0.1
    combine: str = "select"  # or "hedge"
    eta: float = 2.0
    h_decay: float = 0.95
    h_prior: float = 0.0
    margin: float = 0.0
    extra: dict = field(default_factory=dict)


def simulate(d: dict, names: list[str], E: np.ndarray, cfg: Config) -> dict[str, np.ndarray]:
    offsets, lengths = d["offsets"], d["lengths"]
    n_tr = len(lengths)
    cols = {n: i for i, n in enumerate(names)}
    K = len(cfg.experts)
    S = np.zeros((n_tr, K))
    S[:, cfg.experts.index("lstm")] = cfg.prior
    if "lstm_corr" in cfg.experts:
        S[:, cfg.experts.index("lstm_corr")] = cfg.prior_corr
    b = np.zeros(n_tr)
    q = np.zeros(n_tr)
    h = np.full(n_tr, np.nan)
    hn = np.zeros(n_tr)
    rows_total = int(lengths.sum())
    y_all = np.full(rows_total, np.nan)
    res_all = np.full(rows_total, np.nan)
    sel_score = np.full(rows_total, np.nan)
    h_all = np.full(rows_total, np.nan)
    chosen = np.full(rows_total, -1)
    maxlen = int(lengths.max())
    lstm_i = cfg.experts.index("lstm")
    for p in range(maxlen - 1):
        act = np.flatnonzero(lengths - 1 > p)
        if act.size == 0:
            break
        r = offsets[act] + p
        a = d["bw"][r + 1].astype(np.float64)
        model = d["label"][r] != FALLBACK
        served = d["predicted"][r]
        e = np.empty((act.size, K))
        for k, name in enumerate(cfg.experts):
            if name == "lstm":
                e[:, k] = np.where(model, served, np.nan)
            elif name.startswith("mix_"):
                other = E[r, cols[name[4:]]]
                e[:, k] = np.where(model, np.sqrt(np.maximum(served, 0) * np.maximum(other, 0)), np.nan)
            elif name == "lstm_corr":
                e[:, k] = np.where(model, served * np.exp(b[act]), np.nan)
            else:
                e[:, k] = E[r, cols[name]]
        avail = np.isfinite(e)
        s = np.where(avail, S[act], -np.inf)
        if cfg.combine == "select":
            s = s.copy()
            s[:, lstm_i] = np.where(avail[:, lstm_i], s[:, lstm_i] + cfg.margin, -np.inf)
            k_star = np.argmax(s, axis=1)
            y = e[np.arange(act.size), k_star]
        else:
            z = np.where(avail, cfg.eta * (S[act] - S[act].max(axis=1, keepdims=True)), -np.inf)
            w = np.exp(z)
            w /= w.sum(axis=1, keepdims=True)
            with np.errstate(all="ignore"):
                y = np.exp(np.nansum(w * np.log(np.maximum(np.where(avail, e, 1.0), 1e-9)), axis=1))
            k_star = np.argmax(s, axis=1)
        y = np.where(np.isfinite(y), y, served)
        # reserve: the served model's (or fallback's) interval offset, shifted per link
        base = np.log(np.maximum(d["reserve"][r], 1e-9) / np.maximum(served, 1e-9))
        base = np.minimum(np.where(np.isfinite(base), base, 0.0), 0.0)
        if cfg.extra.get("reserve") == "ratio":
            reserve = y * np.clip(np.exp(base) + q[act], 0.0, 1.0)
        else:
            reserve = y * np.exp(base + q[act])
        y_all[r], res_all[r], chosen[r] = y, reserve, k_star
        sel_score[r] = S[act, k_star] * (1 - cfg.decay)
        conf_m = d["confidence"][r]
        h[act] = np.where(np.isnan(h[act]), conf_m, h[act])  # a new link starts from the model's confidence
        h_all[r] = h[act]
        # learn from the actual
        with np.errstate(all="ignore"):
            hit = avail & (a[:, None] > 0) & (np.abs(e - a[:, None]) < 0.2 * a[:, None])
        S[act] = np.where(avail, cfg.decay * S[act] + hit, S[act])
        ok = model & (a > 0) & (served > 0)
        with np.errstate(all="ignore"):
            resid = np.log(a / served)
        if cfg.extra.get("median"):
            b[act] = np.where(ok, b[act] + cfg.beta * np.sign(resid - b[act]), b[act])
        else:
            b[act] = np.where(ok, b[act] + cfg.beta * (np.clip(resid, -3, 3) - b[act]), b[act])
        miss = a < reserve
        q[act] = q[act] - cfg.gamma * (miss - cfg.alpha)
        if cfg.extra.get("reserve") == "ratio":
            q[act] = np.clip(q[act], -1.0, 1.0)
        with np.errstate(all="ignore"):
            hy = (a > 0) & (np.abs(y - a) < 0.2 * a)
        h[act] = cfg.h_decay * h[act] + (1 - cfg.h_decay) * hy
        hn[act] += 1
    return {"y": y_all, "reserve": res_all, "sel": sel_score, "h": h_all, "chosen": chosen}


def scored_rows(d: dict) -> tuple[np.ndarray, np.ndarray]:
    rows = np.concatenate([np.arange(o, o + n - 1) for o, n in zip(d["offsets"], d["lengths"], strict=True)])
    return rows, d["bw"][rows + 1].astype(np.float64)


def hits(p, a):
    with np.errstate(all="ignore"):
        return (a > 0) & (np.abs(p - a) < 0.2 * a)


def report(d: dict, names: list[str], E: np.ndarray, out: dict, verbose: bool = True) -> dict:
    rows, a = scored_rows(d)
    src = np.repeat(d["sources"], d["lengths"] - 1)
    cols = {n: i for i, n in enumerate(names)}
    res = {}
    lines = []
    for s in sorted(set(src)):
        m = src == s
        rr = rows[m]
        aa = a[m]
        adapted = hits(out["y"][rr], aa).mean()
        lstm = hits(d["predicted"][rr], aa).mean()
        base = {n: hits(E[rr, cols[n]], aa).mean() for n in ("last", "ewma0.3", "hm5")}
        best = max(base.values())
        cov = (aa >= out["reserve"][rr]).mean()
        cov_lstm = (aa >= np.minimum(d["reserve"][rr], d["predicted"][rr])).mean()
        res[s] = (adapted, lstm, base["last"], best, cov, cov_lstm)
        lines.append(f"{s:14s} n={m.sum():7d} adapted {100*adapted:5.1f} lstm {100*lstm:5.1f} "
                     f"last {100*base['last']:5.1f} best {100*best:5.1f} d_best {100*(adapted-best):+5.1f} "
                     f"cov {100*cov:5.1f} (lstm {100*cov_lstm:5.1f})")
    macro = np.mean([v[0] - v[2] for v in res.values()])
    macro_lstm = np.mean([v[1] - v[2] for v in res.values()])
    worst = min(v[0] - v[3] for v in res.values())
    covs = [v[4] for v in res.values()]
    if verbose:
        print("\n".join(lines))
    print(f"macro adapted-last {100*macro:+.2f} (lstm {100*macro_lstm:+.2f}); "
          f"worst vs best {100*worst:+.2f}; coverage {100*min(covs):.1f}..{100*max(covs):.1f}")
    return res


def cache(models_dir: str | None = None) -> None:
    from predictor.forecaster import Forecaster
    from predictor.link_predictor import LinkPredictor
    from predictor.runtime import load_models
    from training.backtest import replay_traces
    from training.traces import cut, default_traces_dir, load_traces, split_traces

    CACHE.mkdir(parents=True, exist_ok=True)
    infos, read = load_traces(default_traces_dir())
    roles = split_traces(infos)
    models = load_models(models_dir, ("datacenter", "internet"))
    for role in ("validation", "test"):
        segments = [s for s in roles[role] if len(cut(read(s.info), s)) > 1]
        traces = [cut(read(s.info), s) for s in segments]
        r = replay_traces(traces, LinkPredictor(Forecaster(models), "auto", adaptation=None))
        np.savez(CACHE / f"{role}.npz", lengths=np.array([len(t) for t in traces]),
                 bw=np.concatenate([t.values[:, 0] for t in traces]),
                 predicted=r.predicted, reserve=r.reserve, confidence=r.confidence, label=r.label,
                 sources=np.array([s.info.source for s in segments]))
        np.save(CACHE / f"{role}-experts.npy", experts_of(load(role))[1])
        print(role, len(traces), "traces", f"{r.seconds:.0f} s")


DESIGNS = {
    "models alone": dict(experts=("lstm", "last"), prior=1e9, decay=1.0),
    "all experts, decay 0.95": dict(),
    "all experts, decay 0.98, margin 2": dict(decay=0.98, prior=3, margin=2),
    "hedge, eta 3": dict(decay=0.97, prior=3, prior_corr=2.7, combine="hedge", eta=3),
    "residual correction alone": dict(experts=("lstm_corr", "lstm", "last"), prior=0, prior_corr=1e9,
                                      beta=0.02, decay=1.0),
    "models + last value, decay 0.98": dict(experts=("lstm", "last"), decay=0.98, prior=3),
    "models + last value + median 5, decay 0.98, margin 1":
        dict(experts=("lstm", "last", "med5"), decay=0.98, prior=3, margin=1),
    "the same, margin 2": dict(experts=("lstm", "last", "med5"), decay=0.98, prior=3, margin=2),
    "the same, decay 0.9, margin 1": dict(experts=("lstm", "last", "med5"), decay=0.9, prior=3, margin=1),
    "the same, decay 0.95, margin 1 (shipped without a gate)":
        dict(experts=("lstm", "last", "med5"), decay=0.95, prior=3, margin=1),
}


def sweep() -> None:
    names = list(window_experts(np.arange(5.0)).keys())
    for role in ("validation", "test"):
        d, E = load(role), np.load(CACHE / f"{role}-experts.npy")
        print(f"== {role} groups")
        for label, kw in DESIGNS.items():
            print(f"{label:62s}", end=" ")
            report(d, names, E, simulate(d, names, E, Config(
                gamma=0.02, extra={"reserve": "ratio"}, **{"prior_corr": 0, **kw})), verbose=False)


def scale() -> None:
    """Whether the models' point sits where the hit window wants it: a model whose loss
    matches the window scores best near a factor of 1 (models alone, no adaptation)."""
    names = list(window_experts(np.arange(5.0)).keys())
    for role in ("validation", "test"):
        d, E = load(role), np.load(CACHE / f"{role}-experts.npy")
        rows, a = scored_rows(d)
        src = np.repeat(d["sources"], d["lengths"] - 1)
        model = d["label"][rows] != FALLBACK
        last = hits(E[rows, names.index("last")], a)
        for factor in (0.94, 0.96, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02):
            hit = hits(d["predicted"][rows] * np.where(model, factor, 1.0), a)
            gain = [100 * (hit[src == s].mean() - last[src == s].mean()) for s in sorted(set(src))]
            print(f"{role:10s} x {factor:.2f}: macro over the last value {np.mean(gain):+.2f}")


def _gate_rows(role: str, models_dir: str | None) -> dict:
    from predictor.manifest import DEFAULT_MODELS_DIR
    from training.gate import gate_rows
    from training.traces import cut, default_traces_dir, load_traces, split_traces

    path = CACHE / f"gate-{role}.npz"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        infos, read = load_traces(default_traces_dir())
        segments = [s for s in split_traces(infos)[role] if len(cut(read(s.info), s)) > 1]
        traces = [cut(read(s.info), s) for s in segments]
        rows = gate_rows(Path(models_dir or DEFAULT_MODELS_DIR), traces)
        lengths = np.array([len(t) - 1 for t in traces])
        baselines = {f"baseline_{name}": np.concatenate([walk_forward(t.values[:, 0], name) for t in traces])
                     for name in REPORTED_BASELINES}
        np.savez(path, features=rows.features, experts=rows.experts, actual=rows.actual, **baselines,
                 source=np.repeat([s.info.source for s in segments], lengths),
                 trace=np.repeat(np.arange(len(traces)), lengths))
    return dict(np.load(path))


def _gate_report(label: str, d: dict, chosen: np.ndarray) -> None:
    """Macro hit rate over the last value, and the worst source against the best of the
    reported baselines (last value, EWMA 0.3, harmonic mean of 5) on the same rows."""
    hit = hits(d["experts"], d["actual"][:, None])
    published = hit[np.arange(len(chosen)), chosen]
    gains, worst = [], []
    for s in sorted(set(d["source"])):
        m = d["source"] == s
        base = [hits(d[f"baseline_{name}"][m], d["actual"][m]).mean() for name in REPORTED_BASELINES]
        gains.append(100 * (published[m].mean() - hit[m, 1].mean()))
        worst.append(100 * (published[m].mean() - max(base)))
    print(f"{label:40s} macro over the last value {np.mean(gains):+.2f}; "
          f"worst source against its best baseline {min(worst):+.2f}")


def gate(models_dir: str | None = None) -> None:
    from training.gate import choose, train_gate

    valid, test = _gate_rows("validation", models_dir), _gate_rows("test", models_dir)
    y = hits(valid["experts"], valid["actual"][:, None]).astype(np.float32)
    half = valid["trace"] % 2 == 0
    for name, fit_on in (("even", half), ("odd", ~half)):
        g = train_gate(valid["features"][fit_on], y[fit_on], seed=20261129)
        held = {k: v[~fit_on] for k, v in valid.items()}
        _gate_report(f"validation, fitted on the {name} traces", held, choose(g, held["features"]))
    g = train_gate(valid["features"], y, seed=20261129)
    _gate_report("test, fitted on all validation traces", test, choose(g, test["features"]))


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "sweep"
    {"cache": cache, "sweep": sweep, "scale": scale, "gate": gate}[command](*sys.argv[2:])
