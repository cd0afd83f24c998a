"""CUDA: the bundled models give on the GPU what they give on the CPU, and training's autocast paths run.

Marked ``cuda`` (``pytest -m cuda``; run by ``make gpu-check``) and skipped without a CUDA GPU.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU (torch.cuda.is_available() is False)"),
]

CHECKPOINTS = Path(__file__).resolve().parent.parent / "resources" / "checkpoints"
PROMPT_CHECKPOINT = CHECKPOINTS / "petseg-prompt-effnet256.safetensors"
SEMANTIC_CHECKPOINT = CHECKPOINTS / "petseg-unet-effnet256.safetensors"
# GPU convolutions (cuDNN, TF32) round differently from the CPU's: probabilities agree closely, not bit for bit.
MEAN_PROB_DIFF = 2e-3
MASK_AGREEMENT = 0.995  # share of pixels with the same label / the same side of 0.5


def photos(pet_photos: list[Path]) -> list[np.ndarray]:
    """The real Test photos of the ``pet_photos`` fixture as RGB arrays."""
    from models.images import load_rgb

    return [load_rgb(p) for p in pet_photos]


def test_predictor_on_cuda_matches_the_cpu(pet_photos):
    from models.predictor import load_predictor

    cpu, gpu = load_predictor(PROMPT_CHECKPOINT, device="cpu"), load_predictor(PROMPT_CHECKPOINT, device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    for rgb in photos(pet_photos):
        h, w = rgb.shape[:2]
        clicks = [(w / 2, h / 2, True)]
        box = (w * 0.1, h * 0.1, w * 0.9, h * 0.9)
        for predictor in (cpu, gpu):
            predictor.set_image(rgb)
        for prompts in ({"points": clicks}, {"box": box}, {"points": [*clicks, (5, 5, False)], "box": box}):
            a, b = cpu.predict(**prompts), gpu.predict(**prompts)
            assert a.shape == b.shape == (h, w)
            assert float(np.abs(a - b).mean()) < MEAN_PROB_DIFF, prompts
            assert float(((a > 0.5) == (b > 0.5)).mean()) > MASK_AGREEMENT, prompts


def test_segmenter_on_cuda_matches_the_cpu(pet_photos):
    from models.predictor import load_segmenter

    cpu, gpu = load_segmenter(SEMANTIC_CHECKPOINT, device="cpu"), load_segmenter(SEMANTIC_CHECKPOINT, device="cuda")
    for rgb in photos(pet_photos):
        a, b = cpu.probabilities(rgb), gpu.probabilities(rgb)
        assert float(np.abs(a - b).mean()) < MEAN_PROB_DIFF
        assert float((a.argmax(axis=2) == b.argmax(axis=2)).mean()) > MASK_AGREEMENT


@pytest.mark.parametrize("precision, flags", [("fp16", []), ("bf16", ["--bf16"])])
def test_training_autocast_runs_with_finite_loss(precision, flags, pets_root, tmp_path):
    """A few real training steps under autocast: fp16 with its GradScaler (the CUDA default), and bf16."""
    from models.checkpoint import read_metadata
    from training.cli import main
    from training.fit.state import read_train_state

    out = tmp_path / precision
    code = main(["fit", "--arch", "unet", "--encoder", "effnet_lite0", "--base", "8", "--data", str(pets_root),
                 "--out", str(out), "--device", "cuda", "--size", "128", "--limit", "16", "--batch-size", "4",
                 "--epochs", "2", "--workers", "2", "--no-progress", *flags])
    assert code == 0
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(int(r["train_steps"]) == 4 for r in rows)
    assert all(math.isfinite(float(r["train_loss"])) and math.isfinite(float(r["val_loss"])) for r in rows)
    assert read_metadata(out / "last.safetensors")["hardware"]["precision"] == precision
    _, state = read_train_state(out / ".last.state.safetensors")
    if precision == "fp16":  # the GradScaler ran: its scale is saved for --resume
        assert state["scaler"] is not None and state["scaler"]["scale"] > 0
    else:
        assert state["scaler"] is None
