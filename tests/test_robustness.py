"""The eight perturbations of the robustness study, and the robustness command's outputs."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from models.images import load_rgb
from training.perturbations import LEVELS, PERTURBATIONS, perturb


@pytest.fixture(scope="module")
def photo(pet_photos):
    return load_rgb(pet_photos[1])


def test_registry_has_eight_perturbations_with_ten_levels():
    assert list(PERTURBATIONS) == [
        "gaussian_noise", "gaussian_blur", "contrast_up", "contrast_down",
        "brightness_up", "brightness_down", "occlusion", "salt_and_pepper",
    ]
    for entry in PERTURBATIONS.values():
        assert len(entry.labels) == len(entry.values) == LEVELS and callable(entry.function)
    assert PERTURBATIONS["contrast_down"].values[-1] == 0.10
    assert PERTURBATIONS["salt_and_pepper"].values[-1] == 0.18
    assert PERTURBATIONS["gaussian_noise"].labels[1] == "sigma=2"


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_level_one_is_the_clean_image(photo, name):
    out = perturb(photo, name, 0, rng=1)
    assert out.dtype == np.uint8 and out.shape == photo.shape
    assert np.array_equal(out, photo)


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_strongest_level_changes_the_image_and_stays_uint8(photo, name):
    out = perturb(photo, name, LEVELS - 1, rng=1)
    assert out.dtype == np.uint8 and out.shape == photo.shape and not np.array_equal(out, photo)
    assert np.array_equal(out, perturb(photo, name, LEVELS - 1, rng=1))  # seeded


def test_gaussian_noise_std(photo):
    mid = np.full((200, 200, 3), 128, np.uint8)  # away from the clipping bounds
    diff = perturb(mid, "gaussian_noise", 9, rng=0).astype(float) - 128
    assert diff.std() == pytest.approx(18, rel=0.03) and abs(diff.mean()) < 0.3
    diff = perturb(photo, "gaussian_noise", 4, rng=0).astype(float) - photo
    assert 6.5 < diff.std() <= 8.1  # sigma 8, a little less where clipped


def test_blur_reduces_high_frequencies(photo):
    def high_freq(image):  # variance of the Laplacian: the image's high-frequency energy
        return cv2.Laplacian(image.astype(np.float32).mean(axis=2), cv2.CV_32F).var()

    energies = [high_freq(perturb(photo, "gaussian_blur", level)) for level in (0, 1, 9)]
    assert energies[0] > energies[1] > energies[2] and energies[2] < 0.1 * energies[0]
    # the kernel preserves the mean (a normalised low-pass filter)
    assert perturb(photo, "gaussian_blur", 9).mean() == pytest.approx(photo.mean(), abs=0.5)


def test_contrast_and_brightness_values(photo):
    flat = photo.astype(float)
    assert np.abs(perturb(photo, "contrast_down", 9).astype(float) - flat * 0.10).max() <= 0.5
    up = perturb(photo, "contrast_up", 9).astype(float)
    assert np.abs(up - np.clip(flat * 1.25, 0, 255)).max() <= 0.5
    assert np.array_equal(perturb(photo, "brightness_up", 9), np.clip(flat + 45, 0, 255).astype(np.uint8))
    assert np.array_equal(perturb(photo, "brightness_down", 9), np.clip(flat - 45, 0, 255).astype(np.uint8))


def test_occlusion_square_size(photo):
    out = perturb(np.full_like(photo, 200), "occlusion", 9, rng=3)
    ys, xs = np.nonzero((out == 0).all(axis=2))
    assert len(ys) == 45 * 45
    assert ys.max() - ys.min() + 1 == 45 and xs.max() - xs.min() + 1 == 45
    # the place is random but seeded
    other = perturb(np.full_like(photo, 200), "occlusion", 9, rng=4)
    assert not np.array_equal(out, other)
    assert (perturb(np.full_like(photo, 200), "occlusion", 1, rng=3) == 0).all(axis=2).sum() == 25


def test_salt_and_pepper_density(photo):
    grey = np.full((300, 300, 3), 128, np.uint8)
    out = perturb(grey, "salt_and_pepper", 9, rng=0)
    white = (out == 255).all(axis=2).mean()
    black = (out == 0).all(axis=2).mean()
    assert white + black == pytest.approx(0.18, abs=0.01)
    assert white == pytest.approx(0.09, abs=0.01) and black == pytest.approx(0.09, abs=0.01)
    changed = (perturb(photo, "salt_and_pepper", 9, rng=0) != photo).any(axis=2).mean()
    assert changed == pytest.approx(0.18, abs=0.02)


def test_bad_level_or_name():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError):
        perturb(image, "gaussian_noise", 10)
    with pytest.raises(KeyError):
        perturb(image, "fog", 1)


def test_robustness_command_writes_csv_plots_and_summary(tmp_path, pets_root, tiny_semantic_checkpoint, capsys):
    from training.cli import main

    out = tmp_path / "robust"
    code = main(["robustness", "--checkpoint", str(tiny_semantic_checkpoint), "--data", str(pets_root),
                 "--limit", "2", "--out", str(out), "--device", "cpu", "--no-progress"])
    assert code == 0
    with open(out / "robustness.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 80
    assert list(rows[0]) == ["perturbation", "level", "parameter", "dice", "iou"]
    for row in rows:
        assert 0.0 <= float(row["dice"]) <= 1.0 and 0.0 <= float(row["iou"]) <= 1.0
    clean = {(r["dice"], r["iou"]) for r in rows if r["level"] == "1"}
    assert len(clean) == 1  # level 1 is the same clean set for every perturbation
    for name in PERTURBATIONS:
        assert (out / f"{name}.png").stat().st_size > 1000
    assert (out / "summary.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 2 and summary["task"] == "semantic"
    assert summary["sets"] == {"mPC": 80, "mPC_corrupted": 72}
    dice = [float(r["dice"]) for r in rows]
    assert summary["mPC"]["dice"] == pytest.approx(np.mean(dice), abs=1e-5)
    if summary["clean"]["dice"] > 0:
        assert summary["rPC"]["dice"] == pytest.approx(summary["mPC"]["dice"] / summary["clean"]["dice"])
    else:  # a random-init model can miss every class; rPC is then undefined, not a crash
        assert summary["rPC"]["dice"] is None
    strongest = [r for r in rows if r["perturbation"] == "salt_and_pepper" and r["level"] == "10"][0]
    assert summary["strongest"]["salt_and_pepper"]["dice"] == pytest.approx(float(strongest["dice"]), abs=1e-5)
    assert "mPC" in capsys.readouterr().out


def test_robustness_prompt_runner_box_and_clicks(pets_root, tiny_prompt_checkpoint):
    from models.predictor import load_predictor
    from training.data import find_samples, load_sample
    from training.robustness import _PromptRunner, summarize

    rgb, mask = load_sample(find_samples(pets_root, "Test")[0])
    predictor = load_predictor(tiny_prompt_checkpoint, "cpu")
    for mode in ("box", "clicks"):
        runner = _PromptRunner(predictor, mode)
        target = runner.prepare(mask)
        assert set(np.unique(target)) <= {0, 1, 255}
        pred = runner(perturb(rgb, "occlusion", 9, rng=0), target)
        assert pred.shape == mask.shape and set(np.unique(pred)) <= {0, 1}
        assert mode in runner.description
    scores = {(name, level): (0.5, 0.4) for name in PERTURBATIONS for level in range(LEVELS)}
    summary = summarize(scores)
    assert summary["mPC"]["dice"] == pytest.approx(0.5) and summary["rPC"]["iou"] == pytest.approx(1.0)
