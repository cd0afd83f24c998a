"""The prompt U-Net's global context (``--context``): a click reaches the whole photo, and a model
grown with it from a checkpoint without it starts as that checkpoint. Tiny real models, real photos."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.checkpoint import read_metadata
from models.registry import build_model
from training.cli import main
from training.fit.errors import FitError
from training.fit.parent import add_new_layers

SIZE = 128
TINY = {"base": 4, "depth": 3, "encoder": "scratch"}
FIT = ["--arch", "prompt_unet", "--size", "64", "--encoder", "scratch", "--base", "8", "--depth", "3",
       "--workers", "0", "--augment", "none", "--no-progress", "--limit", "4", "--val-fraction", "0.25",
       "--epochs", "1", "--batch-size", "4", "--clicks-rounds", "1"]


def _far_corner_gradient(context: int) -> float:
    """How much the logit at the top-left corner depends on the prompt maps at the bottom-right."""
    torch.manual_seed(0)
    model = build_model("prompt_unet", {**TINY, "context": context}).eval()
    if context:
        torch.nn.init.normal_(model.context.out.weight)  # as if trained: zero-initialised, it adds nothing yet
    maps = torch.rand(1, 4, SIZE, SIZE).requires_grad_()
    model(torch.randn(1, 3, SIZE, SIZE), maps)[0, 0, 4, 4].backward()
    return float(maps.grad[0, :, -16:, -16:].abs().sum())


def test_a_click_reaches_the_far_corner_only_through_the_context_layers():
    assert _far_corner_gradient(0) == 0.0  # the convolutions alone do not reach across the photo
    assert _far_corner_gradient(1) > 0.0


def test_a_model_grown_with_context_computes_what_its_parent_did():
    torch.manual_seed(1)
    parent_model = build_model("prompt_unet", TINY).eval()
    parent = parent_model.state_dict()
    grown = build_model("prompt_unet", {**TINY, "context": 2}).eval()
    add_new_layers(parent, grown, "parent.safetensors")
    grown.load_state_dict(parent)  # strict: the parent now has every key
    image, maps = torch.randn(2, 3, SIZE, SIZE), torch.rand(2, 4, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(grown(image, maps), parent_model(image, maps))

    other = build_model("unet", TINY).state_dict()  # no prompt encoder: more is missing than context layers
    with pytest.raises(FitError, match=r"--init-from parent.safetensors: its weights do not fit this model"):
        add_new_layers(other, grown, "parent.safetensors")


def test_fit_grows_a_checkpoint_with_context_layers_that_start_as_no_change(tiny_data: Path, tmp_path: Path, capsys):
    assert main(["fit", "--data", str(tiny_data), "--out", str(tmp_path / "parent"), *FIT]) == 0
    parent = tmp_path / "parent" / "last.safetensors"
    assert "context" not in read_metadata(parent)["config"]
    runs = {}
    for name, extra in (("plain", []), ("grown", ["--context", "1"])):
        out = tmp_path / name
        assert main(["fit", "--data", str(tiny_data), "--out", str(out), *FIT, "--init-from", str(parent),
                     "--lr", "1e-3", *extra]) == 0
        runs[name] = read_metadata(out / "last.safetensors")
    assert runs["grown"]["config"]["context"] == 1 and "context" not in runs["plain"]["config"]
    # The same photos kept aside score the grown start exactly as the parent itself.
    assert runs["grown"]["training"]["parent_val"] == runs["plain"]["training"]["parent_val"]
    capsys.readouterr()

    grown = str(tmp_path / "grown" / "last.safetensors")
    assert main(["fit", "--data", str(tiny_data), "--out", str(tmp_path / "x"), *FIT, "--init-from", grown,
                 "--context", "2"]) == 2
    assert "--init-from last.safetensors was trained with --context 1" in capsys.readouterr().err
    assert main(["fit", "--data", str(tiny_data), "--out", str(tmp_path / "again"), *FIT, "--init-from", grown]) == 0
    assert read_metadata(tmp_path / "again" / "last.safetensors")["config"]["context"] == 1  # kept from the parent


@pytest.mark.parametrize("args, message", [
    (["--arch", "unet", "--context", "1"], "--context is not an option of architecture unet"),
    (["--arch", "prompt_unet", "--context", "-1"], "--context -1: must be 0 or more layers"),
])
def test_context_option_is_checked_in_one_line(args, message, tiny_data, tmp_path, capsys):
    assert main(["fit", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
