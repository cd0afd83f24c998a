"""A training run's human-readable record: ``log.csv`` (one row per epoch) and ``curves.png``."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from models.files import atomic_path

PLOT_INTERVAL = 60.0  # seconds between curve plots during a run (always plotted at its end)
LOG_FIELDS = (
    "epoch", "phase", "train_loss", "val_loss", "val_miou",
    "iou_background", "iou_cat", "iou_dog", "iou_1click", "iou_3click",
    "lr", "seconds", "world_size", "train_steps",
)


class RunLog:
    """Rewrites ``log.csv`` after every epoch and ``curves.png`` at most every PLOT_INTERVAL seconds
    (matplotlib costs ~0.5 s a plot), and once more at the end if the last plot is out of date."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._last_plot = time.time()
        self._plotted = 0  # history rows in the last plot

    def update(self, history: list[dict[str, Any]]) -> None:
        write_log(self.out, history)
        if time.time() - self._last_plot > PLOT_INTERVAL:
            write_curves(self.out, history)
            self._last_plot = time.time()
            self._plotted = len(history)

    def finish(self, history: list[dict[str, Any]]) -> None:
        if history and self._plotted != len(history):
            write_curves(self.out, history)


def write_log(out: Path, history: list[dict[str, Any]]) -> None:
    """``out/log.csv``: the LOG_FIELDS of every history row (empty where a row has none)."""
    with atomic_path(out / "log.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in LOG_FIELDS})


def write_curves(out: Path, history: list[dict[str, Any]]) -> None:
    """``out/curves.png``: loss per phase (train and validation) and validation IoUs per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = list(range(1, len(history) + 1))
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(10, 4))
    for phase in sorted({r["phase"] for r in history}):
        xs = [i for i, r in zip(epochs, history) if r["phase"] == phase]
        rows = [r for r in history if r["phase"] == phase]
        ax_loss.plot(xs, [r["train_loss"] for r in rows], marker="o", label=f"train ({phase})")
        vl = [(x, r["val_loss"]) for x, r in zip(xs, rows) if r.get("val_loss") is not None]
        if vl:
            ax_loss.plot(*zip(*vl), marker="s", label=f"val ({phase})")
    for key, label in (("val_miou", "val mIoU"), ("iou_background", "background"), ("iou_cat", "cat"),
                       ("iou_dog", "dog"), ("iou_1click", "IoU @1 click"), ("iou_3click", "IoU @3 clicks")):
        pts = [(x, r[key]) for x, r in zip(epochs, history) if r.get(key) not in (None, "")]
        if pts:
            ax_iou.plot(*zip(*pts), marker=".", label=label)
    ax_loss.set(xlabel="epoch (all phases)", ylabel="loss", title="loss")
    ax_iou.set(xlabel="epoch (all phases)", ylabel="IoU", title="validation IoU", ylim=(0, 1))
    for ax in (ax_loss, ax_iou):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with atomic_path(out / "curves.png") as tmp:
        tmp.write_bytes(buf.getvalue())


def emit(run: Any, event: str, **fields: Any) -> None:
    """``--progress-json``: one JSON line ``{"event": event, **fields}`` on stdout (rank 0 only)."""
    if run.cfg.progress_json and run.rt.main:
        print(json.dumps({"event": event, **fields}), flush=True)
