"""Shared fixtures: the real pet photos, tiny random-init checkpoints saved to disk, and an isolated app setup."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO_ROOT = Path(__file__).resolve().parent.parent
PETS_ROOT = Path(os.environ.get("PETSEG_PETS", REPO_ROOT.parent / "shared" / "pets"))

TINY_PROMPT_CONFIG = {"base": 8, "depth": 3}
TINY_SEMANTIC_CONFIG = {"base": 8, "depth": 3}
TINY_SIZE = 64


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked slow unless PETSEG_SLOW=1."""
    if os.environ.get("PETSEG_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set PETSEG_SLOW=1 (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pets_root() -> Path:
    """The real Oxford-IIIT Pet photos beside the repo (../shared/pets or $PETSEG_PETS)."""
    if not (PETS_ROOT / "TrainVal" / "color").is_dir():
        pytest.fail(f"pet photos not found at {PETS_ROOT}; set PETSEG_PETS")
    return PETS_ROOT


@pytest.fixture(scope="session")
def pet_photos(pets_root: Path) -> list[Path]:
    """A few real Test photos: a cat, a dog, and a 299x299 squashed copy among them."""
    names = sorted((pets_root / "Test" / "color").glob("*.jpg"))
    cats = [p for p in names if p.name[0].isupper()]
    dogs = [p for p in names if p.name[0].islower()]
    return [cats[0], dogs[0], cats[len(cats) // 2], dogs[len(dogs) // 2]]


@pytest.fixture(scope="session")
def tiny_data(pets_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 real TrainVal photos (6 cats, 6 dogs) symlinked into the processed layout."""
    root = tmp_path_factory.mktemp("pets")
    color, label = root / "TrainVal" / "color", root / "TrainVal" / "label"
    color.mkdir(parents=True)
    label.mkdir(parents=True)
    stems = sorted(p.stem for p in (pets_root / "TrainVal" / "color").glob("*.jpg"))
    cats = [s for s in stems if s[0].isupper()][::40][:6]
    dogs = [s for s in stems if s[0].islower()][::60][:6]
    for stem in cats + dogs:
        (color / f"{stem}.jpg").symlink_to(pets_root / "TrainVal" / "color" / f"{stem}.jpg")
        (label / f"{stem}.png").symlink_to(pets_root / "TrainVal" / "label" / f"{stem}.png")
    return root


@pytest.fixture(scope="session")
def pet_samples(pets_root: Path, pet_photos: list[Path]) -> list:
    """The training.data samples (photo + mask) of the first three ``pet_photos``."""
    from training.data import find_samples

    stems = {p.stem for p in pet_photos[:3]}
    found = [s for s in find_samples(pets_root, "Test") if s.stem in stems]
    assert len(found) == 3
    return found


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Discovery, user data and settings all inside tmp_path; no bundled checkpoints."""
    import models.discovery as discovery

    monkeypatch.setattr(discovery, "resources_dir", lambda: tmp_path / "no-resources")
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("PETSEG_RUNS", str(runs))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PETSEG_CHECKPOINTS", "")
    return tmp_path


@pytest.fixture
def dialogs(monkeypatch):
    """QMessageBox calls are recorded instead of blocking."""
    from PyQt5.QtWidgets import QMessageBox

    seen: list[tuple[str, str, str]] = []

    def record(kind):
        def show(parent, title, text, *args, **kwargs):
            seen.append((kind, title, text))
            return QMessageBox.Ok

        return staticmethod(show)

    for kind in ("warning", "critical", "information", "question"):
        monkeypatch.setattr(QMessageBox, kind, record(kind))
    return seen


@pytest.fixture
def photos(tmp_path, pet_photos):
    """A folder in tmp_path with copies of ``pet_photos``."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in pet_photos:
        shutil.copy(path, folder / path.name)
    return folder


def _save_tiny(directory: Path, arch: str, config: dict, name: str) -> Path:
    import torch

    from models.checkpoint import make_metadata, save_checkpoint
    from models.registry import build_model

    torch.manual_seed(0)
    model = build_model(arch, config)
    metadata = make_metadata(
        arch,
        config,
        input_size=TINY_SIZE,
        normalization=model.normalization,
        training={"data": "random init (tests)", "epochs": 0},
        metrics={},
    )
    return save_checkpoint(directory / name, model, metadata)


@pytest.fixture(scope="session")
def tiny_prompt_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny prompt U-Net saved as a real checkpoint file."""
    return _save_tiny(tmp_path_factory.mktemp("ckpt"), "prompt_unet", TINY_PROMPT_CONFIG, "tiny-prompt.safetensors")


@pytest.fixture(scope="session")
def tiny_semantic_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny semantic U-Net saved as a real checkpoint file."""
    return _save_tiny(tmp_path_factory.mktemp("ckpt"), "unet", TINY_SEMANTIC_CONFIG, "tiny-unet.safetensors")


@pytest.fixture
def with_models(isolated, monkeypatch, tiny_prompt_checkpoint, tiny_semantic_checkpoint):
    """``isolated``, with the tiny checkpoints as the only ones PETSEG_CHECKPOINTS adds."""
    folders = [str(tiny_prompt_checkpoint.parent), str(tiny_semantic_checkpoint.parent)]
    monkeypatch.setenv("PETSEG_CHECKPOINTS", os.pathsep.join(folders))
    return isolated


@pytest.fixture
def window(qtbot, with_models, dialogs):
    """A shown main window with both tiny models loaded; closed afterwards."""
    from app_driver import make_window

    w = make_window(qtbot, with_models)
    yield w
    w.close()


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """``folder`` (created) as a tmpfs of ``size`` (e.g. "300k") while the block runs: a small real disk
    that fills up. Root only; the test is skipped where mounting is refused."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
