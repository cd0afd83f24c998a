"""One click protocol for every interactive predictor: the model, GrabCut and U2-Netp alike."""

from __future__ import annotations

import numpy as np
import pytest

from models.predictor import box_bounds
from training.click_protocol import evaluate_sample, object_target, simulate_clicks, tight_box
from training.data import load_sample


class Spy:
    """Records every call the protocol makes and passes it on."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.calls = []

    def set_image(self, rgb):
        self.calls.append(("set_image", rgb.shape))
        self.predictor.set_image(rgb)

    def predict(self, points=(), box=None, prev_mask=None):
        self.calls.append(("predict", list(points), box, prev_mask))
        return self.predictor.predict(points=points, box=box, prev_mask=prev_mask)


@pytest.fixture(scope="module")
def predictors(tiny_prompt_checkpoint):
    from models.predictor import load_predictor
    from training.grabcut import GrabCutPredictor
    from training.u2netp import U2NetpPredictor

    return {"model": load_predictor(tiny_prompt_checkpoint, "cpu"),
            "grabcut": GrabCutPredictor(max_side=160, iterations=2), "u2netp": U2NetpPredictor()}


def test_one_protocol_drives_model_grabcut_and_u2netp(predictors, pet_samples):
    rgb, mask = load_sample(pet_samples[0])
    target = object_target(mask)
    rows = {}
    for name, predictor in predictors.items():
        spy = Spy(predictor)
        rows[name] = row = evaluate_sample(spy, rgb, target, max_clicks=2, early_stop=False)
        assert set(row) == {"clicks", "ious", "box", "box_iou", "box_inside", "noc85", "noc90", "iou@1", "iou@3", "iou@5",
                            "seconds"}, name
        assert len(row["ious"]) == len(row["clicks"]) == len(row["seconds"]["clicks"]) == 2
        # set_image once, a predict per click with all clicks so far and the previous result, then the box
        assert spy.calls[0] == ("set_image", rgb.shape)
        clicks = [c[1] for c in spy.calls[1:3]]
        assert [len(c) for c in clicks] == [1, 2] and clicks[1][0] == clicks[0][0]
        assert spy.calls[1][3] is None and spy.calls[2][3].shape == target.shape
        assert spy.calls[3][1:] == ([], tight_box(target), None)
        assert 0.0 <= row["box_iou"] <= 1.0 and all(0.0 <= v <= 1.0 for v in row["ious"])
    # the first click is made on an empty prediction, so it is the same for every method
    assert rows["model"]["clicks"][0] == rows["grabcut"]["clicks"][0] == rows["u2netp"]["clicks"][0]
    assert rows["model"]["box"] == rows["grabcut"]["box"] == rows["u2netp"]["box"] == list(tight_box(target))
    assert rows["grabcut"]["box_iou"] > 0.5 and rows["u2netp"]["box_iou"] > 0.5


def test_one_box_clipper_and_image_check(predictors, pet_samples):
    rgb, _ = load_sample(pet_samples[0])
    h, w = rgb.shape[:2]
    for name, predictor in predictors.items():
        with pytest.raises(ValueError, match="HxWx3 uint8"):
            predictor.set_image(rgb[:, :, 0])
        predictor.set_image(rgb)
        with pytest.raises(ValueError, match="empty or outside"):
            predictor.predict(points=[], box=(w + 5, 0, w + 50, h))
        box = (w + 40, h + 40, w // 2, h // 2)  # reordered, clipped
        prob = predictor.predict(points=[], box=box)
        assert prob.shape == (h, w), name
        # nothing outside the box: exactly for the baselines, beyond the predictor's small margin for the model
        x0, y0 = box_bounds(box, w, h)[:2] if name == "model" else (w // 2, h // 2)
        assert not prob[:y0].any() and not prob[:, :x0].any() and prob.any(), name


def test_no_pet_no_run():
    target = np.zeros((8, 8), np.uint8)
    assert evaluate_sample(None, np.zeros((8, 8, 3), np.uint8), target) is None
    assert simulate_clicks(None, target) == {"clicks": [], "ious": [], "seconds": [], "last": None}
