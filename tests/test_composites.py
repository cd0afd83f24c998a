"""Multi-pet composites (training/composites.py) and the ``eval --multi-pet`` benchmark built on them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from models.classes import VOID
from training.composites import (
    MAX_OVERLAP,
    Cutout,
    compose,
    cut_out,
    instance_target,
    keyed_rng,
    split_composites,
)
from training.data import find_samples, load_sample
from training.evaluate import evaluate_multipet

SMALL = 128  # longest side of the downscaled test photos: keeps GrabCut fast


@pytest.fixture(scope="module")
def small_pets(tmp_path_factory: pytest.TempPathFactory, pets_root: Path) -> Path:
    """Six real Test photos (3 cats, 3 dogs) and masks, downscaled, in the processed layout."""
    root = tmp_path_factory.mktemp("small-pets")
    samples = [s for s in find_samples(pets_root, "Test") if s.mask_path]
    cats = [s for s in samples if s.stem[0].isupper()]
    dogs = [s for s in samples if s.stem[0].islower()]
    for folder in ("color", "label"):
        (root / "Test" / folder).mkdir(parents=True)
    for sample in cats[::200][:3] + dogs[::300][:3]:
        rgb, mask = load_sample(sample)
        scale = SMALL / max(rgb.shape[:2])
        size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
        Image.fromarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)).save(root / "Test" / "color" / f"{sample.stem}.jpg")
        Image.fromarray(cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST_EXACT)).save(
            root / "Test" / "label" / f"{sample.stem}.png")
    return root


@pytest.fixture(scope="module")
def small_samples(small_pets: Path) -> list:
    return find_samples(small_pets, "Test")


def _composites(samples, pets=2, count=3):
    return list(split_composites(samples[:count], samples, pets))


def test_composites_are_deterministic(small_samples):
    first, second = _composites(small_samples, 3), _composites(small_samples, 3)
    for a, b in zip(first, second):
        assert a.name == b.name and a.stems == b.stems
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.instances, b.instances)
    assert keyed_rng("a", "b").random() == keyed_rng("a", "b").random() != keyed_rng("b", "a").random()


@pytest.mark.parametrize("pets", [2, 3])
def test_every_pet_visible_little_overlap_void_seam(small_samples, pets):
    for composite in _composites(small_samples, pets):
        assert composite.pets == pets and len(set(composite.stems)) == pets
        assert composite.rgb.shape[:2] == composite.instances.shape
        values = set(np.unique(composite.instances).tolist())
        assert values <= {0, VOID, *range(1, pets + 1)}
        for k in range(1, pets + 1):
            target = instance_target(composite.instances, k)
            assert np.count_nonzero(target == 1) > 0, f"pet {k} of {composite.name} not visible"
            assert set(np.unique(target).tolist()) <= {0, 1, VOID}
        assert all(o <= MAX_OVERLAP for o in composite.overlaps), composite.overlaps


def test_compose_pastes_beside_with_a_void_seam():
    """A synthetic base pet on the left and a square cutout: it lands free of the base, ringed by void."""
    labels = np.zeros((60, 120), np.uint8)
    labels[20:40, 10:30] = 1
    labels[19, 10:30] = VOID
    rgb = np.zeros((60, 120, 3), np.uint8)
    cut = Cutout(np.full((20, 20, 3), 200, np.uint8), np.ones((20, 20), bool), 2)
    out, instances, scales, overlaps = compose(rgb, labels, [cut], keyed_rng("synthetic"))
    pasted = instances == 2
    assert pasted.any() and overlaps[1] <= MAX_OVERLAP
    assert np.count_nonzero(instances == 1) >= 0.9 * 400 - 20 * 4  # the base pet stays (minus seam)
    assert (out[pasted] == 200).all()
    ys, xs = np.nonzero(pasted)
    ring = instances[max(ys.min() - 1, 0):ys.max() + 2, max(xs.min() - 1, 0):xs.max() + 2]
    assert (ring == VOID).any()  # the seam
    assert np.count_nonzero(instances == VOID) > 20  # base's own void kept, plus the seam


def test_cut_out_keeps_sure_pet_pixels_only():
    labels = np.array([[0, 255, 0], [255, 2, 2], [0, 2, 0]], np.uint8)
    cut = cut_out(np.zeros((3, 3, 3), np.uint8), labels)
    assert cut.label == 2 and cut.alpha.tolist() == [[True, True], [True, False]]
    assert cut_out(np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3), np.uint8)) is None


def test_multipet_eval_judges_every_pet_with_grabcut(small_samples):
    from training.grabcut import GrabCutPredictor

    result = evaluate_multipet(GrabCutPredictor(), small_samples[:2], small_samples, pets=2, max_clicks=2)
    assert result["task"] == "multipet" and result["composites"] == 2
    assert result["images"] == 4 and [r["pet"] for r in result["rows"]] == [1, 2, 1, 2]
    assert 0.0 <= result["nof90_share"] <= 1.0 and 0.0 <= result["box_inside"] <= 1.0
    assert 0.0 <= result["iou@1"] <= 1.0 and 0.0 <= result["box_miou"] <= 1.0


def test_multipet_cli_end_to_end(tmp_path, small_pets, tiny_prompt_checkpoint, capsys):
    from training.cli import main

    out = tmp_path / "multipet.json"
    code = main(["eval", "--checkpoint", str(tiny_prompt_checkpoint), "--data", str(small_pets), "--limit", "2",
                 "--multi-pet", "2", "--max-clicks", "2", "--device", "cpu", "--no-progress", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "NoF@90" in printed and "in box" in printed and "4 pets of 2 composites" in printed
    payload = json.loads(out.read_text())
    assert payload["multi_pet"] == 2 and payload["model"]["images"] == 4
    rows = payload["model"]["rows"]
    assert {r["composite"] for r in rows} and all({"noc90", "iou@1", "box_iou", "box_inside"} <= set(r) for r in rows)


def test_multipet_rejects_semantic_checkpoints(small_pets, tiny_semantic_checkpoint, capsys):
    from training.cli import main

    assert main(["eval", "--checkpoint", str(tiny_semantic_checkpoint), "--data", str(small_pets),
                 "--multi-pet", "2"]) == 2
    assert "--multi-pet judges prompt models" in capsys.readouterr().err


def test_share_inside_box():
    from training.click_protocol import share_inside

    pred = np.zeros((10, 10), bool)
    pred[2:6, 2:4] = True  # 8 pixels, 4 of them in the box
    assert share_inside(pred, (2, 2, 4, 4)) == pytest.approx(0.5)
    assert share_inside(np.zeros((4, 4), bool), (0, 0, 2, 2)) is None
