"""Training: losses, prompt simulation, and `petseg-train fit` on tiny real data for every architecture."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from training.cli import main

ARGS_TINY = ["--size", "64", "--encoder", "scratch", "--base", "8", "--depth", "3", "--workers", "0", "--augment", "none",
             "--no-progress"]  # --depth 3 is for the scratch encoder (the default, effnet_lite0, has 5 levels)


def read_log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def fit(data: Path, out: Path, *extra: str) -> int:
    return main(["fit", "--data", str(data), "--out", str(out), *ARGS_TINY, *extra])


# --------------------------------------------------------------------------- losses


def test_losses_ignore_void_and_prefer_correct_logits():
    from training.losses import BinaryLoss, SegmentationLoss, class_weights_from_counts

    target = torch.tensor([[[0, 1], [2, 255]]])
    good = torch.full((1, 3, 2, 2), -5.0)
    for (y, x), c in {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 0}.items():
        good[0, c, y, x] = 5.0
    bad = -good
    for kind in ("ce", "ce_dice", "focal_dice"):
        loss = SegmentationLoss(kind)
        assert loss(good, target) < loss(bad, target)
        # the void pixel does not matter
        changed = good.clone()
        changed[0, :, 1, 1] = torch.tensor([-9.0, 9.0, 3.0])
        assert torch.isclose(loss(good, target), loss(changed, target))
    weighted = SegmentationLoss("ce", class_weights=[1.0, 3.0, 1.0])
    assert weighted(bad, target) > 0
    binary = BinaryLoss()
    obj = torch.tensor([[[1, 0], [255, 1]]])
    logits_good = torch.tensor([[[[6.0, -6.0], [0.0, 6.0]]]])
    assert binary(logits_good, obj) < binary(-logits_good, obj)
    flipped_void = logits_good.clone()
    flipped_void[0, 0, 1, 0] = 9.0
    assert torch.isclose(binary(logits_good, obj), binary(flipped_void, obj))
    weights = class_weights_from_counts([1000, 100, 400])
    assert weights[1] > weights[2] > weights[0] and abs(np.mean(weights) - 1) < 1e-6


def test_lr_schedule_warms_up_then_decays():
    from training.fit.schedule import lr_at

    lrs = [lr_at(s, 100, 10, 1e-3) for s in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 0.05e-3


# --------------------------------------------------------------------------- fit options


def parse_fit(*argv: str):
    from training.cli import _explicit_options, build_parser
    from training.fit import FitConfig

    parser, parsers = build_parser()
    args = parser.parse_args(["fit", *argv])
    return FitConfig.from_args(args, _explicit_options(parsers["fit"], argv), ["petseg-train", "fit", *argv])


def test_fit_config_is_built_once_from_the_command_line():
    from training.cli import build_parser
    from training.fit.config import option_names
    from training.fit.model_setup import model_config, phase_plan

    _, parsers = build_parser()
    dests = {a.dest for a in parsers["fit"]._actions if a.dest != "help"}
    assert dests == set(option_names())  # every option is a typed field, and nothing else
    cfg = parse_fit("--arch", "unet", "--data", "d", "--lr", "0.01", "--limit", "4")
    assert (cfg.lr, cfg.limit, cfg.epochs, cfg.encoder, cfg.bf16) == (0.01, 4, 30, None, False)
    assert cfg.explicit == {"arch", "data", "lr", "limit"} and cfg.argv[:2] == ("petseg-train", "fit")
    assert model_config(cfg) == {"encoder": "effnet_lite0"}  # the registry's default_config
    assert cfg.with_default_encoder().encoder == "effnet_lite0"  # written in when the run starts
    assert parse_fit("--arch", "unet", "--data", "d", "--encoder", "scratch").with_default_encoder().encoder == "scratch"
    assert parse_fit("--arch", "clip", "--data", "d").with_default_encoder().encoder is None  # takes no encoder
    assert model_config(parse_fit("--arch", "autoencoder", "--data", "d", "--base", "8")) == {"base": 8}
    ae = parse_fit("--arch", "autoencoder", "--data", "d", "--ae-epochs", "2", "--epochs", "3")
    assert phase_plan(ae) == [("reconstruction", 2), ("segmentation", 3)]
    assert phase_plan(parse_fit("--arch", "autoencoder", "--data", "d", "--ae-epochs", "0")) == [("segmentation", 30)]


def test_fit_config_resume_keeps_saved_options_but_the_overridable_ones():
    saved = parse_fit("--arch", "unet", "--data", "old", "--lr", "0.01", "--epochs", "5", "--seed", "3",
                      "--device", "cpu", "--workers", "4").options()
    saved["command"] = "fit"  # old resume states also saved the subcommand; ignored
    cfg = parse_fit("--arch", "unet", "--data", "new", "--lr", "0.5", "--epochs", "9", "--resume", "r")
    resumed, ignored = cfg.resumed(saved, "runs/r")
    assert ignored == ["lr"]  # given, but the saved run's value is kept
    assert (resumed.lr, resumed.seed, resumed.workers) == (0.01, 3, 4)  # saved
    assert (resumed.epochs, resumed.data, resumed.device, resumed.resume, resumed.out) == (9, "new", "auto", "r", "runs/r")


def test_fit_config_checks_follow_the_registry():
    from training.fit import FitError

    with pytest.raises(FitError, match="only for unet and prompt_unet"):
        parse_fit("--arch", "clip", "--data", "d", "--clip-weights", "none", "--encoder", "effnet_lite0").check()
    parse_fit("--arch", "clip", "--data", "d", "--clip-weights", "none", "--encoder", "scratch").check()
    with pytest.raises(FitError, match="--clip-weights"):
        parse_fit("--arch", "clip_unet", "--data", "d").check()
    with pytest.raises(FitError, match="--ae-epochs"):
        parse_fit("--arch", "autoencoder", "--data", "d", "--ae-epochs", "-1").check()
    parse_fit("--arch", "unet", "--data", "d", "--ae-epochs", "-1").check()  # not an option of unet: unused


def test_fit_never_branches_on_architecture_names():
    from models.registry import ARCHITECTURES

    for path in (Path(__file__).parent.parent / "training" / "fit").glob("*.py"):
        text = path.read_text()
        for name in ARCHITECTURES:
            assert f'"{name}"' not in text and f"'{name}'" not in text, (path.name, name)


# --------------------------------------------------------------------------- prompt simulation


def test_initial_prompts_lie_on_the_object_and_eval_clicks_follow_errors():
    from training.prompt_training import jittered_box, sample_clicks_inside, sample_initial_prompt

    obj = np.zeros((64, 64), bool)
    obj[20:50, 10:40] = True
    rng = np.random.default_rng(0)
    for _ in range(20):
        clicks = sample_clicks_inside(obj, 3, rng)
        assert clicks and all(obj[y, x] for x, y in clicks)
        assert all(12 <= x <= 37 and 22 <= y <= 47 for x, y in clicks)  # away from the border
        x0, y0, x1, y1 = jittered_box(obj, rng)
        assert abs(x0 - 10) <= 3 and abs(x1 - 39) <= 3 and abs(y0 - 20) <= 3 and abs(y1 - 49) <= 3
        prompt = sample_initial_prompt(obj, rng)
        assert prompt.positives or prompt.box
    assert sample_initial_prompt(np.zeros((8, 8), bool), rng).box is None


def test_prompt_training_step_and_eval_clicks_shapes():
    from models.registry import build_model
    from training.prompt_training import PromptTrainingStep, simulate_eval_clicks

    torch.manual_seed(0)
    model = build_model("prompt_unet", {"base": 8, "depth": 3})
    masks = torch.zeros(2, 64, 64, dtype=torch.int64)
    masks[0, 10:40, 10:40] = 1
    masks[1, 20:60, 5:30] = 2
    masks[1, 0:4] = 255
    images = torch.randn(2, 3, 64, 64)
    logits, target, first = PromptTrainingStep(model)(images, masks, rounds=2, seed=1)
    assert logits.shape == (2, 1, 64, 64) and target.shape == (2, 64, 64) and first is None
    assert set(target.unique().tolist()) == {0, 1, 255}
    logits.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    probs = simulate_eval_clicks(model, images, masks, clicks=3)
    assert len(probs) == 3 and probs[0].shape == (2, 64, 64)


def test_first_prompt_loss_judges_the_initial_prompt_alone():
    """With a first-prompt weight the step also returns, with gradients, the prediction from the
    initial prompt alone: the same as the model's own pass on that prompt, unlike the final one."""
    from models.registry import build_model
    from training.prompt_training import PromptTrainingStep, render_batch, sample_initial_prompt

    torch.manual_seed(0)
    model = build_model("prompt_unet", {"base": 8, "depth": 3}).eval()
    masks = torch.zeros(2, 64, 64, dtype=torch.int64)
    masks[0, 10:40, 10:40] = 1
    masks[1, 20:60, 5:30] = 2
    images = torch.randn(2, 3, 64, 64)
    final, target, first = PromptTrainingStep(model, judge_first_prompt=True)(images, masks, rounds=2, seed=3)
    assert first is not None and first.shape == final.shape and first.requires_grad
    rng = np.random.default_rng(3)
    prompts = [sample_initial_prompt(t == 1, rng) for t in target.numpy().astype(np.uint8)]
    with torch.no_grad():
        alone = model(images, render_batch(64, prompts, None, images.device))
    assert torch.allclose(first.detach(), alone, atol=1e-5)
    assert not torch.allclose(final.detach(), alone, atol=1e-3)  # the corrective clicks changed it
    first.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert PromptTrainingStep(model, judge_first_prompt=True)(images, masks, rounds=0, seed=3)[2] is None


def test_best_by_one_and_three_clicks_prefers_the_epoch_with_the_better_first_click():
    """Two epochs: A is better after 3 clicks, B after 1 click by more than A leads after 3. The
    default rule keeps A; --best-by 1-and-3-clicks makes B the best."""
    from training.fit.run import Progress
    from training.fit.validation import selection_score

    epochs = [{"miou": 0.95, "iou_1click": 0.70, "iou_3click": 0.95},
              {"miou": 0.94, "iou_1click": 0.85, "iou_3click": 0.94}]
    for best_by, winner in (("3-clicks", 1), ("1-and-3-clicks", 2)):
        progress = Progress()
        for epoch, metrics in enumerate(epochs):
            progress.record({"phase": "segmentation"}, {**metrics, "score": selection_score(metrics, best_by)}, epoch)
        assert progress.best_epoch == winner, best_by
    assert selection_score(epochs[1], "1-and-3-clicks") == pytest.approx(0.895)


# --------------------------------------------------------------------------- fit, every architecture

ARCH_RUNS = {
    # arch: extra options; 4 photos, enough epochs for the training loss to fall
    "unet": ["--epochs", "4", "--batch-size", "4", "--lr", "3e-3"],
    "autoencoder": ["--ae-epochs", "3", "--epochs", "3", "--batch-size", "4", "--lr", "3e-3"],
    # the CLIP towers are the slowest: 2 photos, one step per epoch (same batch: the loss must fall)
    "clip": ["--epochs", "2", "--batch-size", "2", "--lr", "3e-3", "--clip-weights", "none", "--limit", "2"],
    "clip_unet": ["--epochs", "2", "--batch-size", "2", "--lr", "3e-3", "--clip-weights", "none", "--limit", "2"],
    "prompt_unet": ["--epochs", "4", "--batch-size", "4", "--lr", "3e-3", "--clicks-rounds", "2",
                    "--first-prompt-loss", "0.5", "--best-by", "1-and-3-clicks"],
}


@pytest.mark.parametrize("arch", list(ARCH_RUNS))
def test_fit_trains_writes_and_is_discovered(arch, tiny_data, tmp_path, monkeypatch):
    from models.checkpoint import load_checkpoint
    from models.discovery import discover_checkpoints

    runs = tmp_path / "runs"
    out = runs / arch
    code = fit(tiny_data, out, "--arch", arch, "--limit", "4", "--val-fraction", "0.25", "--warmup-epochs", "0",
               *ARCH_RUNS[arch])  # a later --limit wins
    assert code == 0
    rows = read_log(out)
    phases = ["reconstruction", "segmentation"] if arch == "autoencoder" else ["segmentation"]
    assert sorted({r["phase"] for r in rows}) == sorted(phases)
    for phase in phases:
        losses = [float(r["train_loss"]) for r in rows if r["phase"] == phase]
        assert losses[-1] < losses[0], (phase, losses)
    seg = [r for r in rows if r["phase"] == "segmentation"]
    assert all(0 <= float(r["val_miou"]) <= 1 for r in seg)
    if arch == "prompt_unet":
        assert seg[-1]["iou_1click"] != "" and seg[-1]["iou_3click"] != ""
    else:
        assert seg[-1]["iou_cat"] != "" or seg[-1]["iou_dog"] != ""
    assert (out / "curves.png").stat().st_size > 1000
    for name in ("last.safetensors", "best.safetensors"):
        model, meta = load_checkpoint(out / name)
        assert meta["arch"] == arch and meta["input_size"] == 64
        assert meta["training"]["train_images"] == (2 if arch.startswith("clip") else 4)
        assert meta["training"]["layout"] == "processed"
        assert "miou" in meta["metrics"] and meta["hardware"]["world_size"] == 1
        assert "petseg-train fit" in meta["command"]
    if arch == "prompt_unet":
        assert {"iou_1click", "iou_3click"} <= set(meta["metrics"])
        assert meta["training"]["first_prompt_loss"] == 0.5
        assert meta["training"]["best_by"] == "1-and-3-clicks"
    monkeypatch.setenv("PETSEG_RUNS", str(runs))
    found = {e.path.name for e in discover_checkpoints() if e.source == "training"}
    assert found == {"last.safetensors", "best.safetensors"}  # the resume state is not offered


@pytest.mark.parametrize("arch", ["unet", "prompt_unet"])
def test_resume_continues_exactly(arch, tiny_data, tmp_path):
    from safetensors.torch import load_file

    common = ["--arch", arch, "--epochs", "2", "--batch-size", "2", "--limit", "2", "--val-fraction", "0.25",
              "--seed", "3", "--cat-boost", "2", "--augment", "light"]  # (a later --augment wins)
    assert fit(tiny_data, tmp_path / "straight", *common) == 0
    assert fit(tiny_data, tmp_path / "split", *common, "--stop-after-epochs", "1") == 0
    assert len(read_log(tmp_path / "split")) == 1
    assert main(["fit", "--resume", str(tmp_path / "split"), "--data", str(tiny_data), "--arch", arch]) == 0
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "split" / "last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    straight, split = read_log(tmp_path / "straight"), read_log(tmp_path / "split")
    assert [r["train_loss"] for r in straight] == [r["train_loss"] for r in split]


@pytest.mark.parametrize("arch", ["unet", "prompt_unet"])
def test_bare_fit_trains_the_imagenet_encoder_and_says_so(arch, tiny_data, tmp_path, capsys):
    from models.checkpoint import read_metadata
    from training.fit.state import read_train_state

    tiny = ["--arch", arch, "--data", str(tiny_data), "--size", "64", "--limit", "2", "--epochs", "1",
            "--workers", "0", "--no-progress"]
    runs = {"default": [], "scratch": ["--encoder", "scratch"]}
    for name, extra in runs.items():
        assert main(["fit", *tiny, "--out", str(tmp_path / name), *extra]) == 0
        runs[name] = capsys.readouterr().err
    assert (f"encoder: effnet_lite0 with ImageNet weights (the default for {arch}; --encoder scratch trains from "
            "scratch)") in runs["default"]
    assert "encoder: scratch, no pretrained weights (--encoder scratch)" in runs["scratch"]
    for name, encoder, pretrained in [("default", "effnet_lite0", "effnet_lite0 imagenet"), ("scratch", "scratch", "none")]:
        meta = read_metadata(tmp_path / name / "last.safetensors")
        assert (meta["config"]["encoder"], meta["training"]["pretrained"]) == (encoder, pretrained)
        _, state = read_train_state(tmp_path / name / ".last.state.safetensors")
        assert state["args"]["encoder"] == encoder  # explicit: a resumed run builds the same model


def test_resume_of_a_state_without_encoder_keeps_its_checkpoint_encoder(tiny_data, tmp_path, capsys):
    """Resume states saved before the default encoder was written in have encoder null: they trained scratch."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    out = tmp_path / "old"
    assert fit(tiny_data, out, "--arch", "unet", "--epochs", "2", "--limit", "2", "--stop-after-epochs", "1") == 0
    state = out / ".last.state.safetensors"
    with safe_open(str(state), framework="pt") as f:
        header = json.loads(f.metadata()["petseg_train_state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header["args"]["encoder"] = None
    save_file(tensors, str(state), metadata={"petseg_train_state": json.dumps(header)})
    capsys.readouterr()
    assert main(["fit", "--resume", str(out), "--data", str(tiny_data), "--arch", "unet"]) == 0
    assert "encoder: scratch, no pretrained weights (saved with the run)" in capsys.readouterr().err
    assert len(read_log(out)) == 2


def test_bare_resume_without_state_starts_fresh(tiny_data, tmp_path):
    out = tmp_path / "fresh"
    assert fit(tiny_data, out, "--arch", "unet", "--epochs", "1", "--limit", "2", "--resume") == 0
    assert len(read_log(out)) == 1


def test_damaged_resume_state_is_a_one_line_error(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert fit(tiny_data, out, "--arch", "unet", "--epochs", "2", "--limit", "2", "--stop-after-epochs", "1") == 0
    state = out / ".last.state.safetensors"
    state.write_bytes(state.read_bytes()[:100])  # truncated, as by a full disk
    capsys.readouterr()
    assert main(["fit", "--resume", str(out), "--data", str(tiny_data), "--arch", "unet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unreadable resume state" in err


def test_missing_data_is_a_one_line_error(tmp_path, capsys):
    code = main(["fit", "--arch", "unet", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nowhere" in err
    assert not (tmp_path / "o").exists()


def test_missing_clip_weights_is_a_one_line_error(tiny_data, tmp_path, capsys):
    code = fit(tiny_data, tmp_path / "o", "--arch", "clip", "--clip-weights", str(tmp_path / "RN50.safetensors"),
               "--limit", "2")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "RN50.safetensors" in err[0]
    code = fit(tiny_data, tmp_path / "o2", "--arch", "clip_unet", "--limit", "2")
    assert code == 2 and "--clip-weights" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["clip", "clip_unet"])
def test_clip_weights_file_is_loaded_into_the_frozen_tower(arch, tiny_data, tmp_path):
    """--clip-weights PATH with an RN50-shaped file (full CLIP keys, as open_clip saves them): the
    trained checkpoint's tower holds exactly the file's weights, and the metadata names the file."""
    import torch
    from safetensors.torch import save_file

    from models.checkpoint import load_checkpoint
    from models.encoders import ClipRN50Encoder

    torch.manual_seed(7)
    tower = ClipRN50Encoder().visual
    weights = {f"visual.{k}": v + 0.01 * torch.randn_like(v) if v.is_floating_point() and "running" not in k else v
               for k, v in tower.state_dict().items()}  # weights unlike a fresh tower's, BatchNorm statistics valid
    weights["logit_scale"] = torch.tensor(4.6)  # a text-side key, ignored
    path = tmp_path / "RN50-test.safetensors"
    save_file(weights, str(path))

    out = tmp_path / arch
    code = fit(tiny_data, out, "--arch", arch, "--clip-weights", str(path), "--limit", "2", "--epochs", "1",
               "--batch-size", "2", "--val-fraction", "0.5")
    assert code == 0
    model, metadata = load_checkpoint(out / "last.safetensors")
    assert metadata["training"]["pretrained"] == str(path)
    loaded = model.encoder.visual.state_dict()
    for key, value in loaded.items():  # frozen: BatchNorm statistics included
        assert torch.equal(value, weights[f"visual.{key}"]), key


def test_bad_size_is_refused(tiny_data, tmp_path, capsys):
    assert main(["fit", "--arch", "unet", "--data", str(tiny_data), "--size", "100"]) == 2
    assert "multiple of 32" in capsys.readouterr().err


def test_cli_wires_eval_and_robustness(tiny_data, tiny_semantic_checkpoint, tmp_path, monkeypatch):
    import training.robustness

    common = ["--checkpoint", str(tiny_semantic_checkpoint), "--data", str(tiny_data), "--split", "TrainVal",
              "--limit", "1", "--no-progress"]
    assert main(["eval", *common, "--json", str(tmp_path / "eval.json")]) == 0  # a real (1-image) run
    assert (tmp_path / "eval.json").is_file()
    seen = []
    monkeypatch.setattr(training.robustness, "run_robustness", lambda args: seen.append(args) or 0)
    assert main(["robustness", *common, "--out", str(tmp_path / "robust")]) == 0  # wiring only (F tests the study)
    assert seen and seen[0].checkpoint == tiny_semantic_checkpoint
