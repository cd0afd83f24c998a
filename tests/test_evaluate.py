"""Evaluation through the public inference API: semantic tables, the click protocol, GrabCut, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.data import load_sample
from training.click_protocol import noc, object_target, tight_box
from training.evaluate import evaluate_foreground, evaluate_prompt, evaluate_semantic, semantic_foreground


class OracleSegmenter:
    """Returns the ground truth (void -> background): checks the metric plumbing, not a model."""

    metadata = {"class_names": ["background", "cat", "dog"]}

    def __init__(self, samples):
        self._masks = iter([load_sample(s)[1] for s in samples])

    def segment(self, rgb):
        mask = next(self._masks).copy()
        assert mask.shape == rgb.shape[:2]
        mask[mask == 255] = 0
        return mask


class OraclePredictor:
    """Answers every prompt with the true object: one click must reach IoU 1."""

    name = "oracle"

    def __init__(self, samples):
        self._targets = iter([object_target(load_sample(s)[1]) for s in samples])

    def set_image(self, rgb):
        self._target = next(self._targets)

    def predict(self, points=(), box=None, prev_mask=None):
        assert points or box is not None
        return (self._target == 1).astype(np.float32)


def test_noc_and_box_helpers():
    assert noc([0.5, 0.86, 0.91], 0.85, 20) == 2
    assert noc([0.5, 0.86, 0.91], 0.90, 20) == 3
    assert noc([0.5, 0.6], 0.90, 20) == 20
    target = np.zeros((10, 12), np.uint8)
    target[2:5, 3:9] = 1
    target[0, 0] = 255
    assert tight_box(target) == (3, 2, 9, 5)
    labels = np.array([[0, 1, 2, 255]], np.uint8)
    assert object_target(labels).tolist() == [[0, 1, 1, 255]]


def test_semantic_eval_tiny_model(pet_samples, tiny_semantic_checkpoint):
    from models.predictor import load_segmenter

    result = evaluate_semantic(load_segmenter(tiny_semantic_checkpoint, "cpu"), pet_samples)
    assert result["images"] == 3 and len(result["rows"]) == 3
    assert set(result["per_class"]) == {"background", "cat", "dog"}
    for values in result["per_class"].values():
        for key in ("iou", "dice", "accuracy"):
            assert values[key] is None or 0.0 <= values[key] <= 1.0
    assert 0.0 <= result["pixel_accuracy"] <= 1.0
    assert 0.0 <= result["mean_iou"] <= 1.0 and result["seconds_per_image"] > 0
    assert evaluate_semantic(load_segmenter(tiny_semantic_checkpoint, "cpu"), pet_samples, limit=1)["images"] == 1


def test_semantic_eval_oracle_is_perfect(pet_samples):
    result = evaluate_semantic(OracleSegmenter(pet_samples), pet_samples)
    assert result["mean_iou"] == pytest.approx(1.0)
    assert result["pixel_accuracy"] == pytest.approx(1.0)
    present = [v for v in result["per_class"].values() if v["iou"] is not None]
    assert len(present) >= 2 and all(v["dice"] == pytest.approx(1.0) for v in present)


def _check_prompt_result(result, images, max_clicks):
    assert result["images"] == images and len(result["rows"]) == images
    for key in ("noc85", "noc90"):
        assert 1 <= result[key] <= max_clicks
    for key in ("iou@1", "iou@3", "iou@5", "box_miou"):
        assert 0.0 <= result[key] <= 1.0
    assert result["seconds_per_click"] > 0
    for row in result["rows"]:
        assert 1 <= len(row["ious"]) <= max_clicks and len(row["clicks"]) == len(row["ious"])
        x, y, positive = row["clicks"][0]
        assert positive  # the first click, on an empty prediction, is always inside the pet


def test_prompt_eval_oracle(pet_samples):
    result = evaluate_prompt(OraclePredictor(pet_samples), pet_samples, max_clicks=3)
    assert result["noc85"] == result["noc90"] == 1
    assert result["iou@1"] == result["box_miou"] == pytest.approx(1.0)


def test_prompt_eval_tiny_model_and_grabcut(pet_samples, tiny_prompt_checkpoint):
    from models.predictor import load_predictor
    from training.grabcut import GrabCutPredictor

    model = evaluate_prompt(load_predictor(tiny_prompt_checkpoint, "cpu"), pet_samples, max_clicks=3)
    _check_prompt_result(model, 3, 3)
    grabcut = evaluate_prompt(GrabCutPredictor(max_side=240, iterations=3), pet_samples[:2], max_clicks=3)
    _check_prompt_result(grabcut, 2, 3)
    assert grabcut["method"] == "grabcut"
    # the same first click for both: the protocol starts from an empty prediction
    assert model["rows"][0]["clicks"][0] == grabcut["rows"][0]["clicks"][0]
    # GrabCut from the tight box is a real segmentation, not the box itself
    assert grabcut["box_miou"] > 0.5


def test_grabcut_predictor_shapes_and_prompts(pet_samples):
    from training.grabcut import GrabCutPredictor

    rgb, mask = load_sample(pet_samples[0])
    target = object_target(mask)
    h, w = mask.shape
    gc = GrabCutPredictor(max_side=160, iterations=2)
    gc.set_image(rgb)
    assert gc.predict([]).shape == (h, w) and not gc.predict([]).any()
    x0, y0, x1, y1 = tight_box(target)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    prob = gc.predict([(cx, cy, True)])
    assert prob.shape == (h, w) and prob.dtype == np.float32 and set(np.unique(prob)) <= {0.0, 1.0}
    assert prob[cy, cx] == 1.0  # a positive click is sure foreground
    both = gc.predict([(cx, cy, True), (2, 2, False)], box=(x0, y0, x1, y1), prev_mask=prob)
    assert both[2, 2] == 0.0 and both[cy, cx] == 1.0
    assert not both[:, : max(0, x0 - 2)].any()  # outside the box is background
    whole = gc.predict([], box=(0, 0, w, h))  # no background left: falls back to the box
    assert whole.shape == (h, w)


def test_eval_cli_writes_json(tmp_path, pets_root, tiny_prompt_checkpoint, tiny_semantic_checkpoint, capsys):
    from training.cli import main

    out = tmp_path / "prompt.json"
    code = main(["eval", "--checkpoint", str(tiny_prompt_checkpoint), "--data", str(pets_root), "--limit", "2",
                 "--max-clicks", "1", "--baseline", "grabcut", "--json", str(out), "--device", "cpu", "--no-progress"])
    assert code == 0
    payload = json.loads(out.read_text())
    assert payload["model"]["images"] == 2 and payload["baseline"]["method"] == "grabcut"
    assert "noc90_ratio" in payload
    printed = capsys.readouterr().out
    assert "NoC@90" in printed and "grabcut" in printed and "NoC@90 model / GrabCut" in printed

    out = tmp_path / "semantic.json"
    code = main(["eval", "--checkpoint", str(tiny_semantic_checkpoint), "--data", str(pets_root), "--limit", "1",
                 "--json", str(out), "--no-progress"])
    assert code == 0
    payload = json.loads(out.read_text())
    assert payload["model"]["task"] == "semantic" and len(payload["model"]["rows"]) == 1
    assert "dog" in capsys.readouterr().out

    assert main(["eval", "--data", str(pets_root)]) == 2  # neither a checkpoint nor a baseline
    assert main(["eval", "--checkpoint", str(tiny_semantic_checkpoint), "--data", str(pets_root),
                 "--baseline", "grabcut"]) == 2
    assert "semantic model" in capsys.readouterr().err


def test_semantic_foreground_matches_a_direct_foreground_run(pet_samples, tiny_semantic_checkpoint):
    """The pet-vs-background row read off the 3-class confusion matrices equals segmenting again."""
    from models.predictor import load_segmenter

    segmenter = load_segmenter(tiny_semantic_checkpoint, "cpu")
    derived = semantic_foreground("tiny", evaluate_semantic(segmenter, pet_samples))
    direct = evaluate_foreground("tiny", lambda rgb: segmenter.segment(rgb) != 0, pet_samples)
    assert derived["foreground_iou"] == pytest.approx(direct["foreground_iou"])
    assert [r["iou"] for r in derived["rows"]] == pytest.approx([r["iou"] for r in direct["rows"]])
    assert derived["images"] == direct["images"] == 3
