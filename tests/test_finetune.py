"""Fine-tuning (`fit --init-from`, `petseg-train finetune`), its guards, the app's annotated folders as
data, copy-paste composites for the prompt model, and per-breed evaluation: tiny real models on real photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.checkpoint import read_metadata
from training.cli import main

TINY = ["--workers", "0", "--augment", "none", "--no-progress", "--batch-size", "4"]


@pytest.fixture(scope="module")
def annotated_folder(pets_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as the app leaves it: 12 photos with <name>_mask.png (and _mask_colour.png) beside
    them, of two breeds, plus one photo not annotated yet."""
    folder = tmp_path_factory.mktemp("annotated")
    stems = sorted(p.stem for p in (pets_root / "TrainVal" / "color").glob("*.jpg"))
    picked = [s for s in stems if s.startswith("Bengal_")][:6] + [s for s in stems if s.startswith("pug_")][:7]
    for stem in picked:
        shutil.copy(pets_root / "TrainVal" / "color" / f"{stem}.jpg", folder / f"{stem}.jpg")
    for stem in picked[:-1]:
        shutil.copy(pets_root / "TrainVal" / "label" / f"{stem}.png", folder / f"{stem}_mask.png")
        shutil.copy(pets_root / "TrainVal" / "label" / f"{stem}.png", folder / f"{stem}_mask_colour.png")
    return folder


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory, tiny_semantic_checkpoint: Path) -> Path:
    return tiny_semantic_checkpoint


def progress_events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_annotated_folder_is_a_data_layout(annotated_folder):
    from training.data import ANNOTATED, detect_layout, find_samples

    assert detect_layout(annotated_folder) == ANNOTATED
    samples = find_samples(annotated_folder)
    assert len(samples) == 13  # the masks and colour previews are no photos
    assert sum(s.mask_path is not None for s in samples) == 12
    assert all(s.mask_path is None or s.mask_path.name == f"{s.stem}_mask.png" for s in samples)


def test_finetune_takes_the_parents_options_and_reports_progress(annotated_folder, parent, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["finetune", "--init-from", str(parent), "--data", str(annotated_folder), "--out", str(out),
                 "--epochs", "2", "--lr", "3e-3", "--progress-json", *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    events = progress_events(captured.out)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "parent" and kinds[-1] == "done" and kinds.count("epoch") == 2
    steps = [e for e in events if e["event"] == "step"]
    assert steps and steps[-1]["step"] == steps[-1]["steps"] and steps[-1]["epoch"] == 2
    done = events[-1]
    parent_miou = events[0]["val_miou"]
    assert done["parent"]["val_miou"] == parent_miou
    last = read_metadata(out / "last.safetensors")
    assert last["arch"] == "unet" and last["input_size"] == 64 and last["config"]["base"] == 8  # the parent's
    assert last["training"]["init_from"] == str(parent) and last["training"]["parent_val"]["val_miou"] == parent_miou
    assert last["training"]["train_images"] + last["training"]["val_images"] == 12
    assert [e["alpha"] for e in events if e["event"] == "mix"] == [0.75, 0.5, 0.25]  # finetune mixes by default
    if done["best_epoch"] or done["mixed"] is not None:  # written only when it beat the parent on the photos kept aside
        assert read_metadata(out / "best.safetensors")["metrics"]["miou"] > parent_miou
    else:
        assert not (out / "best.safetensors").exists()
        assert "no epoch nor mixture beat" in captured.err


def test_mixtures_with_the_parent_are_judged_like_epochs(annotated_folder, parent, tmp_path, capsys):
    """--mix-parent: after the last epoch, its weights mixed with the parent's are validated; the best of
    the epochs and the mixtures is best.safetensors, and a winning mixture is exactly that mixture."""
    from models.checkpoint import load_checkpoint, save_checkpoint
    from training.fit.mixing import mixed_weights

    model, meta = load_checkpoint(parent)
    with torch.no_grad():
        model.decoder.head.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))  # says "dog" more: training beats it
    start = save_checkpoint(tmp_path / "start.safetensors", model, meta)
    out = tmp_path / "run"
    assert main(["finetune", "--init-from", str(start), "--data", str(annotated_folder), "--out", str(out),
                 "--epochs", "2", "--lr", "0.1", "--no-freeze-encoder", "--anchor", "0", "--progress-json", *TINY]) == 0
    events = progress_events(capsys.readouterr().out)
    done = events[-1]
    judged = [e for e in events if e["event"] in ("epoch", "mix")]
    assert [e["event"] for e in judged] == ["epoch", "epoch", "mix", "mix", "mix"]
    assert done["best_val_miou"] == pytest.approx(max(e["val_miou"] for e in judged), abs=1e-5)
    best = read_metadata(out / "best.safetensors")
    assert best["metrics"]["miou"] == pytest.approx(done["best_val_miou"])
    assert best["training"]["mixed_with_parent"] == done["mixed"]
    if done["mixed"] is not None:
        expected = mixed_weights(load_file(str(start)), load_file(str(out / "last.safetensors")), done["mixed"])
        saved = load_file(str(out / "best.safetensors"))
        assert all(torch.allclose(saved[name], value) for name, value in expected.items())


def test_the_mixture_between_two_biased_copies_of_a_good_model_wins(pets_root):
    """The shipped model G with its "dog" bias raised (the start) and lowered (the fine-tuned end) by
    the same amount: the halfway mixture is G itself, which beats both ends on real photos, so
    try_mixtures picks 0.5, reports every verdict with that mixture loaded, and leaves the model as it was."""
    from models.checkpoint import load_checkpoint
    from models.images import load_mask, load_rgb
    from models.predictor import Segmenter
    from training.fit.mixing import try_mixtures
    from training.fit.run import Progress
    from training.metrics import ConfusionMatrix

    model, meta = load_checkpoint(Path("resources/checkpoints/petseg-unet-effnet256.safetensors"))
    model.eval()
    label_dir = pets_root / "TrainVal" / "label"
    stems = sorted(p.stem for p in label_dir.glob("*.png"))
    photos = [s for s in stems if s.startswith("Bengal_")][:2] + [s for s in stems if s.startswith("pug_")][:2]
    segmenter = Segmenter(model, meta, torch.device("cpu"))

    def validate(row: dict) -> dict:
        confusion = ConfusionMatrix()
        for stem in photos:
            confusion.update(segmenter.segment(load_rgb(pets_root / "TrainVal" / "color" / f"{stem}.jpg")),
                             load_mask(label_dir / f"{stem}.png"))
        row["val_miou"] = confusion.labelled_mean_iou()
        return {"miou": row["val_miou"], "score": row["val_miou"]}

    good = {name: value.clone() for name, value in model.state_dict().items()}
    shift = torch.tensor([0.0, 0.0, 6.0])
    start = {**good, "decoder.head.bias": good["decoder.head.bias"] + shift}
    tuned = {**good, "decoder.head.bias": good["decoder.head.bias"] - shift}
    progress = Progress()
    model.load_state_dict(start)
    progress.best = validate({})["miou"]
    model.load_state_dict(tuned)
    verdicts = []

    def judged(alpha, row, metrics, improved):
        verdicts.append((alpha, improved, float(model.state_dict()["decoder.head.bias"][2])))

    assert try_mixtures(model, start, progress, validate, judged) == 0.5
    assert progress.mixed == 0.5 and progress.best > validate({})["miou"]  # beats the fine-tuned end too
    good_bias = float(good["decoder.head.bias"][2])
    assert [(a, i) for a, i, _ in verdicts][1] == (0.5, True) and not verdicts[2][1]
    assert verdicts[1][2] == pytest.approx(good_bias)  # judged with that mixture loaded
    assert torch.equal(model.state_dict()["decoder.head.bias"], tuned["decoder.head.bias"])


def test_mixed_weights_interpolate_floats_and_keep_counters():
    from training.fit.mixing import mixed_weights

    start = {"w": torch.zeros(3), "n": torch.tensor(5)}
    tuned = {"w": torch.tensor([4.0, -4.0, 8.0]), "n": torch.tensor(9)}
    mixed = mixed_weights(start, tuned, 0.25)
    assert torch.equal(mixed["w"], torch.tensor([1.0, -1.0, 2.0])) and int(mixed["n"]) == 9


def test_finetune_writes_best_only_when_it_beats_a_bad_parent(annotated_folder, parent, tmp_path, capsys):
    """A parent whose head says "dog" everywhere: a little training beats it."""
    from models.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(parent)
    with torch.no_grad():
        model.decoder.head.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    bad = save_checkpoint(tmp_path / "bad.safetensors", model, meta)
    out = tmp_path / "run"
    assert main(["finetune", "--init-from", str(bad), "--data", str(annotated_folder), "--out", str(out),
                 "--epochs", "3", "--lr", "0.1", "--no-freeze-encoder", "--anchor", "0", "--progress-json", *TINY]) == 0
    done = progress_events(capsys.readouterr().out)[-1]
    assert done["best_epoch"] >= 1 and done["best_val_miou"] > done["parent"]["val_miou"]
    assert (out / "best.safetensors").exists()


def test_frozen_encoder_and_anchor_guard_the_parents_weights(annotated_folder, parent, tmp_path):
    start = load_file(str(parent))

    def distance(run: Path, prefix: str, buffers: bool = True) -> float:
        end = load_file(str(run / "last.safetensors"))
        keys = [k for k in start if k.startswith(prefix) and (buffers or not k.split(".")[-1].startswith(("running_", "num_")))]
        return sum(float((end[k].float() - start[k].float()).pow(2).sum()) for k in keys)

    runs = {}
    for name, extra in {"free": ["--no-freeze-encoder", "--anchor", "0"],
                        "frozen": ["--anchor", "0"],
                        "anchored": ["--no-freeze-encoder", "--anchor", "20"]}.items():
        runs[name] = tmp_path / name
        assert main(["finetune", "--init-from", str(parent), "--data", str(annotated_folder), "--out", str(runs[name]),
                     "--epochs", "3", "--lr", "1e-2", *extra, *TINY]) == 0
    assert distance(runs["frozen"], "encoder.") == 0.0  # weights and batch-norm statistics alike
    assert distance(runs["free"], "encoder.") > 0 and distance(runs["frozen"], "decoder.") > 0
    assert distance(runs["anchored"], "", buffers=False) < 0.5 * distance(runs["free"], "", buffers=False)


@pytest.mark.parametrize("argv, message", [
    (["--arch", "prompt_unet"], "is a unet checkpoint"),
    (["--size", "128"], "was trained with --size 64"),
    (["--copy-paste", "0.5"], "--copy-paste is only for prompt_unet"),
    (["--first-prompt-loss", "0.5"], "--first-prompt-loss is only for prompt_unet"),
    (["--best-by", "1-and-3-clicks"], "--best-by is only for prompt_unet"),
])
def test_finetune_refuses_options_that_cannot_work(annotated_folder, parent, tmp_path, capsys, argv, message):
    code = main(["finetune", "--init-from", str(parent), "--data", str(annotated_folder), "--out", str(tmp_path / "r"),
                 *argv, *TINY])
    assert code == 2
    assert message in capsys.readouterr().err


def test_anchor_needs_a_parent_and_a_bad_parent_is_one_line(annotated_folder, tmp_path, capsys):
    assert main(["fit", "--arch", "unet", "--data", str(annotated_folder), "--anchor", "0.1", *TINY]) == 2
    assert "--anchor keeps the weights near --init-from's" in capsys.readouterr().err
    assert main(["fit", "--arch", "unet", "--data", str(annotated_folder), "--mix-parent", *TINY]) == 2
    err = capsys.readouterr().err
    assert "--mix-parent mixes the fine-tuned weights with --init-from's" in err and len(err.strip().splitlines()) == 1
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    assert main(["finetune", "--init-from", str(junk), "--data", str(annotated_folder), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("petseg-train: error: --init-from:") and len(err.strip().splitlines()) == 1


def test_breed_filters_training_photos(annotated_folder, parent, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["finetune", "--init-from", str(parent), "--data", str(annotated_folder), "--out", str(out),
                 "--breed", "pug", "--epochs", "1", *TINY]) == 0
    training = read_metadata(out / "last.safetensors")["training"]
    assert training["breed"] == "pug" and training["train_images"] + training["val_images"] == 6
    assert main(["finetune", "--init-from", str(parent), "--data", str(annotated_folder), "--breed", "Sphynx",
                 *TINY]) == 2
    assert "no photos of breed 'Sphynx' (there are: Bengal, pug)" in capsys.readouterr().err


def test_copy_paste_makes_one_pet_the_target(pet_samples):
    from training.composites import cut_out
    from training.copy_paste import CopyPaste
    from training.data import load_sample

    rgb, labels = load_sample(pet_samples[0])
    paste = CopyPaste(pet_samples[1:], probability=1.0)
    torch.manual_seed(3)
    out_rgb, out_labels = paste(rgb, labels)
    torch.manual_seed(3)
    again_rgb, again_labels = paste(rgb, labels)
    assert np.array_equal(out_rgb, again_rgb) and np.array_equal(out_labels, again_labels)  # seeded by torch
    assert not np.array_equal(out_rgb, rgb)  # another pet was pasted
    target = (out_labels == 1) | (out_labels == 2)
    assert target.any() and set(np.unique(out_labels)) <= {0, 1, 2, 255}
    # the target is a single pet: the base pet alone, or one pasted pet alone (the base pet then background)
    base = (labels == 1) | (labels == 2)
    base_kept = np.count_nonzero(target & base) / np.count_nonzero(target)
    assert base_kept > 0.9 or base_kept < 0.1
    if base_kept < 0.1:
        assert np.count_nonzero((out_labels == 0) & base) > 0.5 * np.count_nonzero(base)
    assert cut_out(out_rgb, out_labels) is not None
    never = CopyPaste(pet_samples[1:], probability=0.0)
    same_rgb, same_labels = never(rgb, labels)
    assert same_rgb is rgb and same_labels is labels


def test_copy_paste_validation_mixes_single_photos_and_composites(pet_samples):
    from training.fit.runtime import setup_runtime
    from training.fit.validation import build_val_set

    rt = setup_runtime("cpu")
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}
    plain = build_val_set(pet_samples, 64, norm, rt)
    mixed = build_val_set(pet_samples, 64, norm, rt, composites=True)
    assert len(plain.masks) == 3 and len(mixed.masks) == 3 + 2  # every other photo as a composite too
    for extra in mixed.masks[3:]:
        assert set(np.unique(extra)) <= {0, 1, 255} and (extra == 1).any()
    assert mixed.dataset[4]["image"].shape == (3, 64, 64)


def test_labelled_mean_iou_judges_one_species_fairly():
    from training.metrics import ConfusionMatrix

    confusion = ConfusionMatrix(3)
    target = np.array([0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 1, 1, 1, 2])  # one cat pixel called dog; no dog in the masks
    confusion.update(pred, target)
    assert confusion.mean_iou() == pytest.approx((1 + 0.75 + 0) / 3)  # the absent class counts as 0
    assert confusion.labelled_mean_iou() == pytest.approx((1 + 0.75) / 2)  # its false pixel still costs the cat


def test_eval_by_breed_and_one_breed(pets_root, tiny_semantic_checkpoint, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["eval", "--checkpoint", str(tiny_semantic_checkpoint), "--data", str(pets_root), "--split", "Test",
                 "--limit", "40", "--by-breed", "--no-progress", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    breeds = result["breeds"]
    assert sum(b["images"] for b in breeds) == 40
    assert [b["mean_iou"] for b in breeds] == sorted(b["mean_iou"] for b in breeds)  # worst first
    assert breeds[0]["breed"] in capsys.readouterr().out
    one = breeds[-1]["breed"]
    assert main(["eval", "--checkpoint", str(tiny_semantic_checkpoint), "--data", str(pets_root), "--split", "Test",
                 "--breed", one, "--no-progress", "--json", str(out)]) == 0
    stems = [r["stem"] for r in json.loads(out.read_text())["model"]["rows"]]
    assert stems and all(s.rsplit("_", 1)[0] == one for s in stems)


def test_species_guard_teaches_pet_vs_background_and_keeps_the_parents_species_split():
    from training.losses import SpeciesGuardLoss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    cats = torch.randint(0, 2, (2, 8, 8))  # background or cat
    dogs = cats * 2  # the same pets, called dogs
    cats[0, 0, 0] = dogs[0, 0, 0] = 255
    guard = SpeciesGuardLoss(weight=1.0)
    assert torch.isclose(guard(logits, cats), guard(logits, dogs))  # the labels' species does not matter
    with torch.no_grad():
        assert float(guard(logits, cats, parent_logits=logits)) == pytest.approx(float(guard(logits, cats)), abs=1e-6)
    guard(logits, cats).backward()
    assert torch.allclose(logits.grad[:, 1], logits.grad[:, 2])  # the labels never move the cat/dog split
    logits.grad = None
    other = logits.detach().clone()
    other[:, 2] += 3.0  # a parent far surer of "dog"
    guarded = guard(logits, cats, parent_logits=other)
    assert guarded > guard(logits, cats)
    guarded.backward()
    pet = (cats == 1)
    assert float(logits.grad[:, 2][pet].sum()) < 0  # pulled towards the parent's dog share inside pets


def test_frozen_norm_keeps_batch_norm_statistics(annotated_folder, parent, tmp_path):
    start = load_file(str(parent))
    runs = {}
    for name, flag in (("kept", "--freeze-norm"), ("free", "--no-freeze-norm")):
        runs[name] = load_file(str(tmp_path / name / "last.safetensors")) if main([
            "finetune", "--init-from", str(parent), "--data", str(annotated_folder), "--out", str(tmp_path / name),
            "--epochs", "1", "--no-freeze-encoder", flag, *TINY]) == 0 else None
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(runs["kept"][k], start[k]) for k in stats)
    assert any(not torch.equal(runs["free"][k], start[k]) for k in stats)
    weights = [k for k in start if k.endswith("weight")]
    assert any(not torch.equal(runs["kept"][k], start[k]) for k in weights)  # the rest still trains


@pytest.fixture(scope="module")
def replay_root(pets_root: Path, annotated_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Original data to replay (processed layout): 130 of the small 299x299 TrainVal photos, plus the
    annotated folder's own photos and another pug, which must never be replayed."""
    import csv

    root = tmp_path_factory.mktemp("replay")
    with open(pets_root / "index.csv") as f:
        small = [r["stem"] for r in csv.DictReader(f) if r["split"] == "TrainVal" and r["resized_299"] == "1"]
    own = sorted(p.stem for p in annotated_folder.glob("*.jpg"))
    pugs = [s for s in small if s.startswith("pug_") and s not in own][:1]
    others = [s for s in small if not s.startswith(("Bengal_", "pug_"))][:130]
    for folder in ("color", "label"):
        (root / "TrainVal" / folder).mkdir(parents=True)
    for stem in own + pugs + others:
        shutil.copy(pets_root / "TrainVal" / "color" / f"{stem}.jpg", root / "TrainVal" / "color" / f"{stem}.jpg")
        if (pets_root / "TrainVal" / "label" / f"{stem}.png").exists():
            shutil.copy(pets_root / "TrainVal" / "label" / f"{stem}.png", root / "TrainVal" / "label" / f"{stem}.png")
    return root


def test_replay_mixes_original_photos_into_every_epoch_and_measures_forgetting(
        annotated_folder, replay_root, parent, tmp_path, capsys):
    from training.fit.config import REPLAY_VAL_PHOTOS

    out = tmp_path / "run"
    assert main(["finetune", "--init-from", str(parent), "--data", str(annotated_folder), "--out", str(out),
                 "--breed", "pug", "--replay", str(replay_root), "--replay-ratio", "3", "--epochs", "2",
                 "--progress-json", *TINY]) == 0
    captured = capsys.readouterr()
    events = progress_events(captured.out)
    assert "replay_miou" in events[0]  # the parent's, the floor an epoch must keep
    assert all("replay_miou" in e for e in events if e["event"] == "epoch")
    training = read_metadata(out / "last.safetensors")["training"]
    replay = training["replay"]
    # The photos this run learns from (the folder's pugs) and the other pug (--breed's) are never replayed;
    # the folder's Bengals, which it does not train on, may be.
    assert replay["photos"] + replay["val_photos"] == 130 + 6 and replay["val_photos"] == REPLAY_VAL_PHOTOS
    # Each epoch draws the folder's training photos and three replayed photos for each of them.
    steps = [e for e in events if e["event"] == "step" and e["epoch"] == 1]
    assert len(steps) == (training["train_images"] * 4) // 4


def test_an_epoch_that_forgets_is_never_the_best():
    from training.fit.config import REPLAY_TOLERANCE
    from training.fit.run import Progress

    progress = Progress(best=0.80, parent={"val_miou": 0.80, "replay_miou": 0.90})
    forgetting = {"phase": "segmentation", "val_miou": 0.95, "replay_miou": 0.90 - 2 * REPLAY_TOLERANCE}
    assert progress.forgets(forgetting) and not progress.record(forgetting, {"miou": 0.95, "score": 0.95}, 0)
    kept = {"phase": "segmentation", "val_miou": 0.85, "replay_miou": 0.90 - REPLAY_TOLERANCE / 2}
    assert progress.record(kept, {"miou": 0.85, "score": 0.85}, 1) and progress.best_epoch == 2


def test_replay_refuses_a_folder_without_enough_photos(annotated_folder, parent, tmp_path, capsys):
    assert main(["finetune", "--init-from", str(parent), "--data", str(annotated_folder),
                 "--replay", str(annotated_folder), "--out", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err
    # Its photos are the very ones trained on: none is left to replay, and the line says why.
    assert "--replay" in err and "0 labelled photos to replay (12 more are the photos trained on" in err
    assert "at least 120 are needed" in err and len(err.strip().splitlines()) == 1


def test_replayed_photos_restore_the_original_species_mix(pets_root):
    """A folder of dogs replayed at random beside cats and dogs would teach "every pet is a dog": the
    replayed photos make up the difference, so an epoch holds cats and dogs as the original data does."""
    from training.data import find_samples, only_breed, sample_weights
    from training.fit.data import replay_weights

    samples = [s for s in find_samples(pets_root, "TrainVal") if s.mask_path is not None]
    pugs = only_breed(samples, "pug")[:12]
    others = [s for s in samples if not s.stem.startswith("pug_")][::4]  # cats and dogs
    boosted = sample_weights(others, 2.0)
    target = sum(w for w, s in zip(boosted, others) if s.species == "cat") / sum(boosted)
    for ratio in (1.0, 3.0):
        weights = replay_weights(pugs, others, ratio, cat_boost=2.0)
        assert weights[: len(pugs)] == [1.0] * len(pugs)
        replayed = weights[len(pugs):]
        assert sum(replayed) == pytest.approx(ratio * len(pugs))
        cats = sum(w for w, s in zip(replayed, others) if s.species == "cat")
        share = cats / (len(pugs) + sum(replayed))
        assert share == pytest.approx(target if ratio == 3.0 else 0.5)  # ratio 1: every replayed photo a cat


def _study_module():
    """training/recipes/finetune_study.py, imported (a recipe script, not a package module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_study", Path("training/recipes/finetune_study.py"))
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


def test_the_study_gain_interval_covers_the_gain_and_is_zero_without_one():
    """The fine-tune study's bootstrap interval: identical evaluations give (0, 0); one photo fixed
    out of eight gives an interval around the pooled gain that reaches 0 (some draws miss that photo)."""
    study = _study_module()

    def evaluation(wrong_on: set[int]) -> dict:
        rows = []
        for i in range(8):  # a cat photo: 900 background, 100 cat pixels; "wrong" calls the cat a dog
            cat = [0, 0, 100] if i in wrong_on else [0, 100, 0]
            rows.append({"stem": f"Persian_{i}", "confusion": [[900, 0, 0], cat, [0, 0, 0]]})
        return {"model": {"rows": rows}}

    assert study.gain_interval(evaluation({3}), evaluation({3})) == (0.0, 0.0)
    low, high = study.gain_interval(evaluation({3}), evaluation(set()))
    pooled_gain = 1.0 - (1.0 + 7 / 8) / 2  # after: both labelled classes right; before: background 1, cat 7/8
    assert low == 0.0 and 0.0 < pooled_gain < high


def test_the_new_breeds_study_parent_data_leaves_the_breeds_out(tmp_path):
    """--new-breeds: the parent's training folder links every TrainVal photo and mask but the
    left-out breeds' (a breed name inside another's, pug in pug_like, is not caught), is read by
    find_samples like the original, and is made again without error when the study continues."""
    from training.data import find_samples

    data = tmp_path / "pets"
    stems = ["pug_1", "pug_20", "Persian_3", "Bengal_4", "beagle_5", "pug_like_6"]
    for kind, suffix in (("color", ".jpg"), ("label", ".png")):
        (data / "TrainVal" / kind).mkdir(parents=True)
        for stem in stems:
            (data / "TrainVal" / kind / f"{stem}{suffix}").write_bytes(b"x")
    study = _study_module()
    for _ in range(2):
        folder = study.without_breeds(str(data), ["pug", "Persian"], tmp_path / "without")
    kept = [s.stem for s in find_samples(folder, "TrainVal")]
    assert kept == ["Bengal_4", "beagle_5", "pug_like_6"]
    assert all(s.mask_path.resolve().parent == (data / "TrainVal" / "label").resolve()
               for s in find_samples(folder, "TrainVal"))


def test_the_study_control_table_regroups_all_test_evaluations_by_breed():
    """The cross-breed control: each fine-tuned model's pooled mIoU on every breed, from its
    all-Test evaluation's per-photo rows (a model that only fixed pugs gains on pug alone)."""
    study = _study_module()

    def evaluation(pug_right: bool) -> dict:
        cat_photo = {"stem": "Persian_1", "confusion": [[900, 0, 0], [0, 100, 0], [0, 0, 0]]}
        pug = [0, 0, 100] if pug_right else [50, 0, 50]
        return {"model": {"rows": [cat_photo, {"stem": "pug_1", "confusion": [[900, 0, 0], [0, 0, 0], pug]}]}}

    before, after = study.breed_mious(evaluation(False)), study.breed_mious(evaluation(True))
    assert before["Persian"] == after["Persian"] == 1.0
    assert before["pug"] == pytest.approx((900 / 950 + 50 / 100) / 2)
    rows = [{"breed": "pug", "each_breed": after}, {"breed": "Persian"}]  # no model added: no row
    table = study.cross_breed_table(rows, before, ["Persian", "pug"]).splitlines()
    assert table[2] == "| before | 1.0000 | 0.7237 |"
    assert table[3:] == ["| fine-tuned on pug | 1.0000 | 1.0000 |"]


def test_the_study_refuses_to_continue_a_run_of_other_options(tmp_path):
    """A study folder continued with other options would mix two recipes' results: refused in one
    line (exit 2) before any evaluation."""
    import json
    import subprocess
    import sys

    out = tmp_path / "study"
    out.mkdir()
    (out / "study-args.json").write_text(json.dumps(
        {"data": "../shared/pets", "finetune_args": "", "replay": False, "new_breeds": True}))
    result = subprocess.run([sys.executable, "training/recipes/finetune_study.py", "--data", "../shared/pets",
                             "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "holds a study run with other options" in result.stderr.splitlines()[-1]
    assert not (out / "shipped-test.json").exists()
