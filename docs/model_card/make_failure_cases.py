"""Picture the semantic model's worst Test photos (photo | ground truth | prediction).

    .venv/bin/python docs/model_card/make_failure_cases.py docs/model_card/eval-unet-test.json
"""

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from models.predictor import load_segmenter
from training.data import find_samples, load_sample
from models.classes import MASK_PALETTE
from models.images import save_png_atomic

PETS = Path(__file__).resolve().parents[3] / "shared" / "pets"
COLOURS = np.array(MASK_PALETTE[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
ROW_HEIGHT = 200


def tile(rgb: np.ndarray) -> np.ndarray:
    scale = ROW_HEIGHT / rgb.shape[0]
    return cv2.resize(rgb, (round(rgb.shape[1] * scale), ROW_HEIGHT), interpolation=cv2.INTER_NEAREST)


def main(eval_json: Path, count: int = 4) -> None:
    rows = json.loads(eval_json.read_text())["model"]["rows"]
    worst = {r["stem"] for r in sorted(rows, key=lambda r: r["mean_iou"])[:count]}
    samples = [s for s in find_samples(PETS, "Test") if s.stem in worst]
    segmenter = load_segmenter(json.loads(eval_json.read_text())["checkpoint"], device="cpu")
    strips = []
    for sample in samples:
        rgb, mask = load_sample(sample)
        strip = np.concatenate([tile(rgb), tile(COLOURS[mask]), tile(COLOURS[segmenter.segment(rgb)])], axis=1)
        strips.append(cv2.copyMakeBorder(strip, 4, 4, 4, 4, cv2.BORDER_CONSTANT))
    width = max(s.shape[1] for s in strips)
    picture = np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0))) for s in strips])
    save_png_atomic(eval_json.parent / "failure-cases.png", picture)
    print("worst:", sorted(worst))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
