"""Model > Improve on this folder…: the real dialog runs the real ``petseg-train finetune`` child on
tiny 64 px checkpoints whose outcome is known in advance (constant predictions, see
:func:`constant_checkpoint`), so that each run takes seconds and "added" / "not added" are certain."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app_driver import WAIT, make_window
from models.checkpoint import make_metadata, save_checkpoint
from models.classes import PROMPT, SEMANTIC
from models.discovery import USER, discover_checkpoints, user_data_dir
from models.registry import build_model
from petseg_desktop.finetune_files import MIN_PHOTOS, install_checkpoint, safe_name
from petseg_desktop.improve_dialog import time_left

RUN_WAIT = 120000  # ms: a run is seconds, but the machine is shared with training


def constant_checkpoint(folder: Path, arch: str, head_bias: list[float], name: str) -> Path:
    """A tiny scratch model whose weights are zero but its head's bias: it predicts the same everywhere.

    On photos of cats, a semantic model saying "dog" everywhere scores val mIoU 0, and one step of
    training towards background beats it; one saying "background" by a margin of 10 cannot be changed
    by a few steps at the fine-tune learning rate, so nothing beats it.
    """
    config = {"base": 8, "depth": 3, "encoder": "scratch"}
    model = build_model(arch, config)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.decoder.head.bias.copy_(torch.tensor(head_bias))
    metadata = make_metadata(arch, config, input_size=64, normalization=model.normalization,
                             training={"data": "constant (tests)", "epochs": 0}, metrics={})
    return save_checkpoint(folder / name, model, metadata)


@pytest.fixture(scope="session")
def constant_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("constant-ckpt")
    return {
        "dog everywhere": constant_checkpoint(folder, "unet", [0.0, 0.0, 1e-5], "dogs.safetensors"),
        "background everywhere": constant_checkpoint(folder, "unet", [10.0, 0.0, 0.0], "background.safetensors"),
        "empty prompt": constant_checkpoint(folder, "prompt_unet", [-10.0], "empty-prompt.safetensors"),
    }


@pytest.fixture(scope="session")
def annotated_cats(pets_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder annotated as the app leaves it: MIN_PHOTOS cat photos, each with <stem>_mask.png beside it."""
    folder = tmp_path_factory.mktemp("cats") / "photos"
    folder.mkdir()
    cats = [p for p in sorted((pets_root / "TrainVal" / "color").glob("*.jpg")) if p.name[0].isupper()]
    for photo in cats[::25][:MIN_PHOTOS]:
        shutil.copy(photo, folder / photo.name)
        shutil.copy(pets_root / "TrainVal" / "label" / f"{photo.stem}.png", folder / f"{photo.stem}_mask.png")
    assert len(list(folder.glob("*_mask.png"))) == MIN_PHOTOS
    return folder


@pytest.fixture
def photos_folder(annotated_cats: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(annotated_cats, tmp_path / "photos"))


@pytest.fixture
def app(qtbot, isolated, dialogs, monkeypatch, constant_models):
    """A main window whose only checkpoints are the constant ones; closed afterwards."""
    monkeypatch.setenv("PETSEG_CHECKPOINTS", str(constant_models["empty prompt"].parent))
    w = make_window(qtbot, isolated)
    yield w
    w.close()


def use_semantic(qtbot, w, path: Path) -> None:
    w.models.choose(SEMANTIC, str(path))
    qtbot.waitUntil(lambda: w.models.loaded_info(SEMANTIC)[0] == str(path), timeout=WAIT)


def open_dialog(qtbot, w, folder: Path, semantic: Path, epochs: int):
    use_semantic(qtbot, w, semantic)
    w.open_folder(folder)
    w.models.update_improve()
    assert w.models.improve_action.isEnabled(), w.models.improve_action.toolTip()
    w.models.improve_action.trigger()
    dialog = w.improve_dialog
    assert dialog.start_button.isEnabled()
    dialog.epochs.setValue(epochs)
    return dialog


def user_checkpoints() -> list[Path]:
    return sorted((user_data_dir() / "checkpoints").glob("*.safetensors"))


def test_improve_needs_a_folder_and_20_annotated_photos(qtbot, app, photos_folder, constant_models):
    action = app.models.improve_action
    app.models.update_improve()
    assert not action.isEnabled() and "Open a folder" in action.toolTip()
    missing = sorted(photos_folder.glob("*_mask.png"))[0]
    missing.rename(photos_folder / "kept-elsewhere.txt")
    app.open_folder(photos_folder)
    app.models.update_improve()
    assert not action.isEnabled()
    assert f"{MIN_PHOTOS - 1} photos of this folder have a saved mask" in action.toolTip()
    assert "annotate 1 more" in action.toolTip()

    (photos_folder / "kept-elsewhere.txt").rename(missing)  # the list still says 19: the dialog counts again
    app.open_folder(photos_folder)
    qtbot.waitUntil(action.isEnabled, timeout=WAIT)
    missing.unlink()
    action.trigger()
    dialog = app.improve_dialog
    assert not dialog.start_button.isEnabled()
    assert "annotate 1 more" in dialog.count_label.text()
    assert not dialog.start()


def test_improve_adds_a_model_that_beats_the_current_one(qtbot, app, photos_folder, constant_models):
    dialog = open_dialog(qtbot, app, photos_folder, constant_models["dog everywhere"], epochs=2)
    shown = []  # (status line, bar) at each training step
    dialog.progress.valueChanged.connect(lambda v: shown.append((dialog.rate_label.text(), v)))
    dialog.start_button.click()
    qtbot.waitUntil(lambda: not dialog.running() and dialog.results.isVisible(), timeout=RUN_WAIT)

    training = [(text, value) for text, value in shown if text.startswith("Semantic model: epoch")]
    assert [value for _, value in training] == list(range(1, len(training) + 1))  # every step of both epochs
    assert training[-1][0].startswith("Semantic model: epoch 2/2, about") and training[-1][0].endswith(" s left")
    assert dialog.progress.value() == dialog.progress.maximum() == len(training)
    [added] = user_checkpoints()
    assert added.name.startswith(f"petseg-unet-photos-{datetime.now():%Y%m%d}")
    assert any(e.path == added and e.source == USER and e.loadable for e in discover_checkpoints())
    assert not any("finetune" in e.path.parts for e in discover_checkpoints())  # the run's own files stay out
    assert any(e.path == added for e in app.models.entries)  # the menu was refreshed
    assert dialog.table.rowCount() == 1 and dialog.table.item(0, 2).text() == "0.0000"
    assert float(dialog.table.item(0, 3).text()) > 0
    assert "added as" in dialog.verdict.text() and dialog.rate_label.text() == "Done: a new model was added"
    assert not (dialog.work / "data").exists()  # the photo copies are gone, the run's log stays
    assert (dialog.work / "finetune-unet" / "log.csv").is_file()

    assert dialog.use_button.isVisible()
    dialog.use_button.click()
    qtbot.waitUntil(lambda: app.models.loaded_info(SEMANTIC)[0] == str(added), timeout=WAIT)


def test_improve_adds_nothing_when_no_epoch_beats_the_current_models(qtbot, app, photos_folder, constant_models):
    dialog = open_dialog(qtbot, app, photos_folder, constant_models["background everywhere"], epochs=1)
    assert app.models.loaded_info(PROMPT)[0] == str(constant_models["empty prompt"])
    dialog.also_prompt.setChecked(True)
    dialog.start_button.click()
    qtbot.waitUntil(lambda: dialog.runs[-1].task == PROMPT and dialog.current is dialog.runs[-1], timeout=RUN_WAIT)
    qtbot.waitUntil(lambda: not dialog.running() and dialog.results.isVisible(), timeout=RUN_WAIT)

    assert user_checkpoints() == []
    rows = [[dialog.table.item(r, c).text() for c in range(4)] for r in range(dialog.table.rowCount())]
    assert [row[:2] for row in rows] == [["Semantic model", "val mIoU"], ["Prompt model", "IoU @1 click"],
                                         ["Prompt model", "IoU @3 clicks (decides)"]]
    assert all(row[2] != "–" and row[3] != "–" for row in rows)
    assert dialog.verdict.text().count("did not beat the current one on the photos kept aside; nothing was added") == 2
    assert not dialog.use_button.isVisible() and dialog.rate_label.text() == "Done: nothing was added"
    assert "Traceback" not in dialog.log.toPlainText()


def _wait_for_steps(qtbot, dialog) -> int:
    """Start, wait until training steps come in; the child's process id."""
    dialog.start_button.click()
    qtbot.waitUntil(lambda: ": epoch " in dialog.rate_label.text(), timeout=RUN_WAIT)  # past the copy
    pid = dialog.process.pid()
    assert pid and Path(f"/proc/{pid}").exists()
    return pid


def test_cancel_stops_the_child_and_adds_nothing(qtbot, app, photos_folder, constant_models):
    dialog = open_dialog(qtbot, app, photos_folder, constant_models["dog everywhere"], epochs=50)
    pid = _wait_for_steps(qtbot, dialog)
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: not dialog.running(), timeout=WAIT)

    assert not Path(f"/proc/{pid}").exists()
    assert dialog.rate_label.text() == "Cancelled"
    assert dialog.log.toPlainText().endswith("Cancelled: nothing was added")
    assert user_checkpoints() == [] and not dialog.work.exists()
    assert dialog.start_button.isEnabled() and not dialog.results.isVisible()


def test_closing_the_dialog_while_it_runs_stops_the_child(qtbot, app, photos_folder, constant_models, dialogs):
    dialog = open_dialog(qtbot, app, photos_folder, constant_models["dog everywhere"], epochs=50)
    pid = _wait_for_steps(qtbot, dialog)
    dialog.close()  # the question is answered Ok (stop)
    assert [d[1] for d in dialogs] == ["Training is running"]
    assert not Path(f"/proc/{pid}").exists()
    assert user_checkpoints() == []


def test_a_failed_run_says_why_in_one_line(qtbot, app, photos_folder, constant_models, tmp_path):
    gone = Path(shutil.copy(constant_models["dog everywhere"], tmp_path / "gone.safetensors"))
    dialog = open_dialog(qtbot, app, photos_folder, gone, epochs=1)
    gone.unlink()  # the model in use has left the disk: the child cannot start from it
    dialog.start_button.click()
    qtbot.waitUntil(lambda: dialog.rate_label.text() == "Failed", timeout=RUN_WAIT)

    last = dialog.log.toPlainText().splitlines()[-1]
    assert last.startswith("Failed: --init-from") and "gone.safetensors" in last
    assert dialog.log.toPlainText().count("cannot read") == 1  # said once, not also as the child's own line
    assert "Traceback" not in dialog.log.toPlainText() and user_checkpoints() == []
    assert dialog.start_button.isEnabled()
    assert not dialog.work.exists()  # nothing ran: no empty work folder is left behind


def test_a_mask_that_cannot_be_trained_on_is_left_out_and_said(qtbot, app, photos_folder, constant_models):
    """A saved mask of the photo's size whose values are not classes passes the file list (headers
    only) but not the copy: it is left out in one line, and with 19 photos left nothing trains."""
    dialog = open_dialog(qtbot, app, photos_folder, constant_models["dog everywhere"], epochs=1)
    bad = sorted(photos_folder.glob("*_mask.png"))[0]
    labels = np.array(Image.open(bad))
    Image.fromarray(np.where(labels == 1, 7, labels).astype(np.uint8)).save(bad)
    dialog.start_button.click()
    qtbot.waitUntil(lambda: dialog.rate_label.text() == "Failed", timeout=RUN_WAIT)
    log = dialog.log.toPlainText()
    assert f"Left out 1 photo whose mask cannot be trained on:\n{bad.name}: value 7 is not a class" in log
    assert log.splitlines()[-1] == f"Failed: {MIN_PHOTOS - 1} photos have a mask that can be trained on; at least {MIN_PHOTOS} are needed"
    assert user_checkpoints() == [] and dialog.start_button.isEnabled() and not dialog.work.exists()


def test_original_data_is_remembered_sets_the_recipe_and_reaches_the_child(qtbot, app, photos_folder,
                                                                          constant_models, tmp_path):
    """Original data typed into the dialog: the epochs follow its recipe, the child gets --replay (and
    says in one line why this folder cannot be replayed), and the next dialog offers it again."""
    from petseg_desktop.improve_dialog import DEFAULT_EPOCHS, REPLAY_EPOCHS

    dialog = open_dialog(qtbot, app, photos_folder, constant_models["dog everywhere"], epochs=DEFAULT_EPOCHS)
    too_small = tmp_path / "too small"
    too_small.mkdir()
    qtbot.keyClicks(dialog.replay, str(too_small))
    assert dialog.epochs.value() == REPLAY_EPOCHS
    dialog.start_button.click()
    qtbot.waitUntil(lambda: dialog.rate_label.text() == "Failed", timeout=RUN_WAIT)
    last = dialog.log.toPlainText().splitlines()[-1]
    assert last.startswith("Failed: ") and "too small" in last and user_checkpoints() == []
    dialog.close()

    app.models.improve_action.trigger()
    again = app.improve_dialog
    assert again.replay.text() == str(too_small) and again.epochs.value() == REPLAY_EPOCHS
    again.replay.clear()
    assert again.epochs.value() == DEFAULT_EPOCHS
    gone = tmp_path / ("gone" * 40)
    width = again.width()
    qtbot.keyClicks(again.replay, str(gone))  # checked before any photo is copied
    again.start_button.click()
    assert again.rate_label.text() == f"Original data: {gone} is not a folder"
    assert not again.running() and again.start_button.isEnabled()
    qtbot.wait(100)  # the layout settles
    assert again.width() == width  # a long status line wraps instead of widening the dialog


def test_starts_from_follows_the_model_chosen_while_the_dialog_is_open(qtbot, app, photos_folder, constant_models):
    dialog = open_dialog(qtbot, app, photos_folder, constant_models["dog everywhere"], epochs=1)
    assert dialog.start_label.text().startswith(constant_models["dog everywhere"].name)
    use_semantic(qtbot, app, constant_models["background everywhere"])
    assert dialog.start_label.text().startswith(constant_models["background everywhere"].name)


def test_install_checkpoint_names_and_never_overwrites(isolated, tmp_path):
    best = tmp_path / "best.safetensors"
    best.write_bytes(b"weights")
    when = datetime(2025, 3, 4, 5, 6)
    first = install_checkpoint(best, "unet", Path("/x/My Cats!"), when)
    second = install_checkpoint(best, "unet", Path("/x/My Cats!"), when)
    assert first.name == "petseg-unet-My-Cats-20250304-0506.safetensors"
    assert second.name == "petseg-unet-My-Cats-20250304-0506-2.safetensors"
    assert first.read_bytes() == b"weights" and first.parent == user_data_dir() / "checkpoints"
    assert safe_name("...") == "photos"


def test_time_left():
    assert time_left(125.4) == "about 2 min 5 s left"
    assert time_left(9.6) == "about 10 s left"
