"""PNG figures for `pba train --plot`: loss curves, predicted vs actual, calibration."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from predictor.features import from_log_ratio  # noqa: E402


def plot_training(out: Path, mode: str, history: list[dict[str, float]], model: torch.nn.Module,
                  valid: object) -> None:
    out.mkdir(parents=True, exist_ok=True)
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax.set(xlabel="epoch", ylabel="loss", title=f"{mode}: loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{mode}-loss.png", dpi=110)
    plt.close(fig)

    x, y, scale = valid.x[:600], valid.y[:600], valid.scale[:600]  # type: ignore[attr-defined]
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).numpy()
    actual = from_log_ratio(y, scale)
    point = from_log_ratio(pred[:, 1], scale)
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(actual, lw=0.8, label="actual")
    ax.plot(point, lw=0.8, label="predicted")
    ax.fill_between(np.arange(len(x)), from_log_ratio(pred[:, 0], scale),
                    from_log_ratio(pred[:, 2], scale), alpha=0.2, label="q10..q90")
    ax.set(xlabel="validation window", ylabel="Mbit/s", title=f"{mode}: predicted vs actual")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{mode}-predicted-vs-actual.png", dpi=110)
    plt.close(fig)
