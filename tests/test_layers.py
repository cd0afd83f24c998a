"""One-way layers: the import-linter contracts hold (and catch a forbidden import), and the app
and batch export run without the training-only `train` extra."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("models", "petseg_desktop", "training")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--config", "setup.cfg", "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_hold_and_catch_an_upward_import(tmp_path: Path) -> None:
    kept = _lint_imports(REPO)
    assert kept.returncode == 0, kept.stdout[-3000:]
    assert "3 kept, 0 broken" in kept.stdout

    for package in PACKAGES:  # a copy of the tree in which the core imports the app
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "setup.cfg", tmp_path / "setup.cfg")
    with open(tmp_path / "models" / "errors.py", "a", encoding="utf-8") as f:
        f.write("\nimport petseg_desktop.export  # an upward import\n")
    broken = _lint_imports(tmp_path)
    assert broken.returncode != 0
    assert "models.errors -> petseg_desktop.export" in broken.stdout


def _train_extra_modules() -> list[str]:
    """Top-level import names of the distributions that only the `train` extra installs."""
    names = []
    for requirement in metadata.requires("petseg") or []:
        if not re.search(r"extra\s*==\s*['\"]train['\"]", requirement):
            continue
        dist = metadata.distribution(re.split(r"[=<>!~;\[ ]", requirement, maxsplit=1)[0])
        top_level = dist.read_text("top_level.txt")
        if top_level:
            names += top_level.split()
        else:
            names += sorted({f.parts[0].removesuffix(".py") for f in dist.files or []
                             if f.suffix == ".py" or (len(f.parts) > 1 and f.parts[1] == "__init__.py")})
    return sorted({n for n in names if n and not n.startswith("_")})


# Runs a command's main() with the train extra's packages made unimportable, as in an install without
# them, and fails if anything of training/ got imported.
RUNNER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (train extra not installed)")
sys.meta_path.insert(0, Block())
module, args = sys.argv[2], sys.argv[3:]
code = __import__(module, fromlist=["main"]).main(args)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED | {"training"})
assert not loaded, loaded
sys.exit(code)
"""


@pytest.fixture(scope="module")
def train_only() -> str:
    blocked = _train_extra_modules()
    assert {"timm", "open_clip", "albumentations", "matplotlib", "onnxruntime", "torchvision"} <= set(blocked)
    return ",".join(blocked)


def _run_without_train_extra(train_only: str, module: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_DATA_HOME": str(home / "data"), "QT_QPA_PLATFORM": "offscreen"}
    env.pop("PETSEG_CHECKPOINTS", None)
    return subprocess.run([sys.executable, "-c", RUNNER, train_only, module, *args], cwd=home, env=env,
                          capture_output=True, text=True, timeout=180)


def test_export_runs_without_the_train_extra(train_only: str, pet_photos: list[Path], tmp_path: Path) -> None:
    from models.images import load_mask

    photo = pet_photos[0]
    run = _run_without_train_extra(train_only, "petseg_desktop.export", "--input", str(photo),
                                   "--output", str(tmp_path / "masks"), "--device", "cpu", home=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    labels = load_mask(tmp_path / "masks" / f"{photo.stem}.png")
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels > 0).mean() > 0.05


def test_app_starts_without_the_train_extra(train_only: str, tmp_path: Path) -> None:
    run = _run_without_train_extra(train_only, "petseg_desktop.app", "--startup-check", "--device", "cpu",
                                   home=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    assert "petseg-prompt-effnet256.safetensors" in run.stdout and run.stdout.rstrip().endswith("ok")


def test_opening_the_window_code_loads_neither_torch_nor_training() -> None:
    """The GUI modules import models/ without torch; only the inference worker loads torch, in its thread."""
    code = (
        "import sys, petseg_desktop.main_window, petseg_desktop.editor, petseg_desktop.canvas; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training')); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
