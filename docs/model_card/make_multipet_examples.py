"""Picture a few 2-pet Test composites and a prompt model's mask for each pet after one click.

    OMP_NUM_THREADS=2 .venv/bin/python docs/model_card/make_multipet_examples.py [CHECKPOINT [PNG NAME]]

Defaults: the shipped prompt model, ``multipet-examples.png`` beside this script.

Row per composite: the composite (void seam in white) | each pet's first click (green dot) and
its predicted mask (probability > 0.5, red) with the pet's true outline (yellow) and the IoU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from models.classes import VOID  # noqa: E402
from models.predictor import load_predictor  # noqa: E402
from training.click_protocol import THRESHOLD  # noqa: E402
from training.clicks import next_click  # noqa: E402
from training.composites import instance_target, split_composites  # noqa: E402
from training.evaluate import labelled_samples, spread_subset  # noqa: E402
from training.metrics import binary_iou  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PETS = REPO.parent / "shared" / "pets"
CHECKPOINT = REPO / "resources" / "checkpoints" / "petseg-prompt-effnet256.safetensors"
COMPOSITES = 3
PETS_PER_COMPOSITE = 2


def overlay(rgb: np.ndarray, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``rgb`` with ``pred`` tinted red and the true pet's outline in yellow."""
    out = rgb.astype(np.float32)
    out[pred] = 0.5 * out[pred] + 0.5 * np.array([255, 0, 0])
    out = out.astype(np.uint8)
    contours, _ = cv2.findContours((target == 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 255, 0), max(1, rgb.shape[0] // 200))
    return out


def main() -> None:
    pool = labelled_samples(PETS, "Test")
    bases = spread_subset(pool, 100)[::33][:COMPOSITES]
    checkpoint = Path(sys.argv[1]) if len(sys.argv) > 1 else CHECKPOINT
    picture = sys.argv[2] if len(sys.argv) > 2 else "multipet-examples.png"
    predictor = load_predictor(checkpoint, device="cpu")
    columns = 1 + PETS_PER_COMPOSITE
    fig, axes = plt.subplots(COMPOSITES, columns, figsize=(4 * columns, 3.2 * COMPOSITES))
    for row, composite in zip(axes, split_composites(bases, pool, PETS_PER_COMPOSITE)):
        shown = composite.rgb.copy()
        shown[composite.instances == VOID] = 255
        row[0].imshow(shown)
        row[0].set_title(composite.name.replace("+", " + "), fontsize=8)
        predictor.set_image(composite.rgb)
        for k in range(1, composite.pets + 1):
            target = instance_target(composite.instances, k)
            click = next_click(np.zeros(target.shape, bool), target, target == VOID)
            pred = predictor.predict(points=[click], box=None, prev_mask=None) > THRESHOLD
            row[k].imshow(overlay(composite.rgb, pred, target))
            row[k].plot([click[0]], [click[1]], "o", color="lime", markersize=6, markeredgecolor="black")
            row[k].set_title(f"pet {k} ({'base' if k == 1 else 'pasted'}): 1 click, IoU {binary_iou(pred, target):.2f}",
                             fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(HERE / picture, dpi=80)


if __name__ == "__main__":
    main()
