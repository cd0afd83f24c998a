"""Smoke test of the packaged app (slow: builds dist/petseg/ with `make package` unless given one).

Runs the bundled executables as a user would, with no Python environment: the batch exporter on
three real Test photos (masks checked against the ground truth), then the GUI offscreen with
``--startup-check`` (window up, bundled models loaded, closed cleanly). Set PETSEG_PACKAGE_DIR to
test an existing build instead of building one (``make test-package`` does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.predictor import load_segmenter
from models.version import __version__
from models.images import load_rgb


pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent

BUNDLED_MODELS = ("petseg-prompt-effnet256.safetensors", "petseg-unet-effnet256.safetensors")


@pytest.fixture(scope="module")
def package_dir() -> Path:
    """The one-folder app: $PETSEG_PACKAGE_DIR, else a fresh `make package` build."""
    given = os.environ.get("PETSEG_PACKAGE_DIR")
    if not given:
        subprocess.run(["make", "package"], cwd=REPO_ROOT, check=True, timeout=1800)
    folder = Path(given or REPO_ROOT / "dist" / "petseg").resolve()
    assert (folder / "petseg").is_file() and (folder / "petseg-export").is_file(), f"no app bundle in {folder}"
    return folder


def _bare_env(home: Path) -> dict[str, str]:
    """An environment with no Python, venv or checkpoint settings: only the bundle can be used."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "QT_QPA_PLATFORM": "offscreen"}


def _pet_iou(labels: np.ndarray, truth: np.ndarray) -> float:
    known = truth != 255
    predicted, target = (labels > 0) & known, (truth > 0) & known
    return float((predicted & target).sum() / max((predicted | target).sum(), 1))


def test_bundled_exporter_writes_correct_masks(package_dir: Path, pet_photos: list[Path], tmp_path: Path) -> None:
    photos = tmp_path / "photos ünïcode"
    photos.mkdir()
    for photo in pet_photos[:3]:
        shutil.copy(photo, photos)
    out = tmp_path / "masks"
    run = subprocess.run(
        [str(package_dir / "petseg-export"), "--input", str(photos), "--output", str(out)],
        cwd=tmp_path, env=_bare_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert BUNDLED_MODELS[1] in run.stderr  # the bundled semantic model, found inside the bundle
    source_segmenter = load_segmenter(REPO_ROOT / "resources" / "checkpoints" / BUNDLED_MODELS[1], "cpu")
    for photo in pet_photos[:3]:
        labels = np.array(Image.open(out / f"{photo.stem}.png"))
        truth = np.array(Image.open(photo.parent.parent / "label" / f"{photo.stem}.png"))
        assert labels.shape == truth.shape and set(np.unique(labels)) <= {0, 1, 2}
        assert _pet_iou(labels, truth) > 0.7, photo.name
        same = (labels == source_segmenter.segment(load_rgb(photo))).mean()
        assert same > 0.995, f"{photo.name}: the bundle and the source tree disagree on {1 - same:.2%} of pixels"
    assert not list(out.glob("*.tmp*")), "temporary files left behind"


def test_bundled_app_opens_window_loads_models_and_closes(package_dir: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [str(package_dir / "petseg"), "--startup-check"],
        cwd=tmp_path, env=_bare_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    assert "ready in" in run.stdout and run.stdout.rstrip().endswith("ok")
    assert f"petseg {__version__} startup check" in run.stdout  # the bundle knows setup.cfg's version
    assert __version__ != "unknown"
    for name in BUNDLED_MODELS:
        assert name in run.stdout
