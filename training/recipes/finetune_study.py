"""The fine-tuning study of MODEL_CARD.md: does ``petseg-train finetune`` on 40 photos of one breed
help that breed, and what does it cost everywhere else?

For the three breeds the shipped semantic model does worst on (its per-breed mIoU on Test), it
fine-tunes the shipped model on 40 TrainVal photos of the breed (32 to train, 8 kept aside to pick
the epoch; ``finetune``'s defaults otherwise), then evaluates on the breed's Test photos and on all
of Test. Every step writes a JSON file into ``--out`` and is skipped when that file exists, so an
interrupted study continues where it stopped (with the same options only: ``study-args.json``);
``study.json`` and two Markdown tables end it: each breed's gain with a bootstrap interval over its
Test photos (a breed has only 7-11 of them), and a control, each fine-tuned model on every one of
the three breeds (a gain the other breeds' fine-tunes bring too is not the breed's own).

    .venv/bin/python training/recipes/finetune_study.py --data ../shared/pets --out runs/finetune-study

``--finetune-args "..."`` adds options to every fine-tune (another recipe: give it its own --out);
``--replay`` fine-tunes with the parent's own training data replayed.

``--new-breeds`` measures a user's case more closely: pets the model has never seen. The shipped
model trained on the three breeds' TrainVal photos, so fine-tuning it on them only re-weights what it
saw. With this flag, a parent is first trained with the shipped semantic model's recipe on TrainVal
without those three breeds (processed layout only): its data is links in ``runs/pets-without-<breeds>``
and its run ``runs/unet-without-<breeds>`` (beside ``--out``, so that studies of other recipes share
it). That parent is fine-tuned, judged and compared with instead (``--replay``: on its own data,
never the left-out breeds).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHIPPED = Path("resources/checkpoints/petseg-unet-effnet256.safetensors")
TRAIN = [sys.executable, "-m", "training.cli"]
PHOTOS = 32  # training photos per breed; with --val-fraction 0.2 and --limit, 8 more are kept aside
BREEDS = 3
# --new-breeds: the shipped semantic model's recipe (training/recipes/train_default_models.sh)
PARENT_RECIPE = ["fit", "--arch", "unet", "--encoder", "effnet_lite0", "--base", "16", "--size", "256",
                 "--epochs", "5", "--batch-size", "8", "--lr", "5e-4", "--warmup-epochs", "1", "--augment", "strong",
                 "--loss", "ce_dice", "--class-weights", "auto", "--cat-boost", "2", "--seed", "0", "--workers", "1",
                 "--channels-last"]


def step(out: Path, name: str, argv: list[str]) -> dict:
    """Run ``petseg-train argv`` unless ``out/name`` exists; returns that JSON (with its CPU time)."""
    path = out / name
    if not path.exists():
        print(f"--- {' '.join(argv)}", flush=True)
        started = time.time()
        subprocess.run(TRAIN + argv, check=True)
        if not path.exists():  # finetune writes no JSON of its own: record its run
            path.write_text(json.dumps({"seconds": round(time.time() - started, 1)}) + "\n")
        else:
            data = json.loads(path.read_text())
            data["seconds"] = round(time.time() - started, 1)
            path.write_text(json.dumps(data) + "\n")
    return json.loads(path.read_text())


def evaluate(out: Path, name: str, checkpoint: Path, data: str, breed: str | None = None,
             by_breed: bool = False) -> dict:
    argv = ["eval", "--checkpoint", str(checkpoint), "--data", data, "--split", "Test", "--no-progress",
            "--json", str(out / name)]
    argv += ["--breed", breed] if breed else []
    argv += ["--by-breed"] if by_breed else []
    return step(out, name, argv)


def pooled_miou(matrix: np.ndarray) -> float:
    """mIoU over the classes a summed confusion matrix's masks hold (as ``eval --breed`` reports it)."""
    from training.metrics import ConfusionMatrix

    pooled = ConfusionMatrix(num_classes=matrix.shape[0])
    pooled.matrix = matrix
    return pooled.labelled_mean_iou()


def breed_mious(evaluation: dict) -> dict[str, float]:
    """Each breed's pooled mIoU in an evaluation of all of Test (eval JSON with per-photo rows), as
    ``eval --by-breed`` reports it."""
    from training.evaluate import breed_rows

    return {row["breed"]: row["mean_iou"] for row in breed_rows(evaluation["model"])}


def gain_interval(before: dict, after: dict, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of a breed's mIoU gain when its Test photos are drawn again
    with replacement (``before`` and ``after``: eval JSON): how large a gain its 7-11 photos can tell
    from chance."""
    after_rows = {row["stem"]: np.array(row["confusion"]) for row in after["model"]["rows"]}
    stems = sorted(after_rows)
    before_rows = {row["stem"]: np.array(row["confusion"]) for row in before["model"]["rows"]}
    old, new = np.stack([before_rows[s] for s in stems]), np.stack([after_rows[s] for s in stems])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(stems), size=(draws, len(stems)))
    gains = [pooled_miou(new[pick].sum(0)) - pooled_miou(old[pick].sum(0)) for pick in picks]
    low, high = np.percentile(gains, [2.5, 97.5])
    return float(low), float(high)


def without_breeds(data: str, breeds: list[str], folder: Path) -> Path:
    """``folder`` holding links to ``data``'s TrainVal photos and masks except those of ``breeds``."""
    from training.data import breed_of

    for kind in ("color", "label"):
        target = folder / "TrainVal" / kind
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted((Path(data) / "TrainVal" / kind).iterdir()):
            link = target / path.name
            if breed_of(path.stem) not in breeds and not link.is_symlink():
                link.symlink_to(path.resolve())
    return folder


def cross_breed_table(rows: list[dict], before_breeds: dict[str, float], breeds: list[str]) -> str:
    """A control, as Markdown: each fine-tuned model on each of the three breeds (from its all-Test
    evaluation). A gain that the other breeds' fine-tunes also bring is not the breed's own."""
    lines = ["| model | " + " | ".join(breeds) + " |", "|---" * (len(breeds) + 1) + "|",
             "| before | " + " | ".join(f"{before_breeds[b]:.4f}" for b in breeds) + " |"]
    lines += [f"| fine-tuned on {r['breed']} | " + " | ".join(f"{r['each_breed'][b]:.4f}" for b in breeds) + " |"
              for r in rows if "each_breed" in r]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/pets")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune-study"))
    parser.add_argument("--finetune-args", default="", help="more petseg-train finetune options, e.g. \"--lr 3e-4\"")
    parser.add_argument("--replay", action="store_true", help="fine-tune with --replay on the parent's training data")
    parser.add_argument("--new-breeds", action="store_true",
                        help="fine-tune a parent trained without the three breeds (see the module docstring)")
    args = parser.parse_args()
    extra = shlex.split(args.finetune_args)
    if args.new_breeds and "--replay" in extra:
        parser.error("with --new-breeds give --replay to the study (it replays the parent's data, not --data)")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    asked = {"data": args.data, "finetune_args": args.finetune_args, "replay": args.replay, "new_breeds": args.new_breeds}
    recorded = out / "study-args.json"
    if recorded.exists() and json.loads(recorded.read_text()) != asked:
        parser.error(f"{out} holds a study run with other options ({recorded.read_text().strip()}); "
                     "give another --out, or the same options to continue it")
    recorded.write_text(json.dumps(asked) + "\n")
    shipped = evaluate(out, "shipped-test.json", SHIPPED, args.data, by_breed=True)
    breeds = [row["breed"] for row in shipped["breeds"][:BREEDS]]
    parent, before, parent_data = SHIPPED, shipped, args.data
    if args.new_breeds:
        left_out = "-".join(breeds)
        parent_data = str(without_breeds(args.data, breeds, out.parent / f"pets-without-{left_out}"))
        parent_run = out.parent / f"unet-without-{left_out}"
        step(out, "parent-fit.json", [*PARENT_RECIPE, "--data", parent_data, "--out", str(parent_run),
                                      "--resume", "--no-progress"])
        parent = parent_run / "best.safetensors"
        before = evaluate(out, "parent-test.json", parent, args.data, by_breed=True)
    extra += ["--replay", parent_data] if args.replay else []
    (out / "finetune-args.txt").write_text(" ".join(shlex.quote(a) for a in extra) + "\n")
    before_breeds = {row["breed"]: row["mean_iou"] for row in before["breeds"]}
    rows = []
    for breed in breeds:
        run = out / f"finetune-{breed}"
        tune = step(out, f"finetune-{breed}.json", [
            "finetune", "--init-from", str(parent), "--data", args.data, "--breed", breed,
            "--limit", str(PHOTOS), "--out", str(run), "--resume", "--no-progress", *extra])
        best = run / "best.safetensors"
        row = {"breed": breed, "finetune_seconds": tune["seconds"],
               "before_breed": before_breeds[breed], "before_all": before["model"]["mean_iou"],
               "improved_on_val": best.exists()}
        if best.exists():
            after = evaluate(out, f"after-{breed}-breed.json", best, args.data, breed=breed)
            after_all = evaluate(out, f"after-{breed}-all.json", best, args.data)
            each_breed = breed_mious(after_all)
            row.update(after_breed=after["model"]["labelled_mean_iou"], after_all=after_all["model"]["mean_iou"],
                       test_photos=after["model"]["images"], gain_interval=gain_interval(before, after),
                       each_breed={b: each_breed[b] for b in breeds})
        rows.append(row)
    (out / "study.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(cross_breed_table(rows, before_breeds, breeds))
    print("| breed | Test photos | breed mIoU before | after | gain, 95% bootstrap interval "
          "| all-Test mIoU before | after | fine-tune (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        interval = "-" if "gain_interval" not in r else "{:+.3f} to {:+.3f}".format(*r["gain_interval"])
        print(f"| {r['breed']} | {r.get('test_photos', '-')} | {fmt(r['before_breed'])} | {fmt(r.get('after_breed'))} "
              f"| {interval} | {fmt(r['before_all'])} | {fmt(r.get('after_all'))} | {r['finetune_seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
