"""The checkpoint format and discovery: round trip, and one-line reasons for bad files."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from models.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from models.discovery import BUNDLED, ENVIRONMENT, TRAINING, discover_checkpoints, search_folders
from models.registry import build_model


@pytest.fixture
def isolated_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every user-dependent search folder into tmp_path."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PETSEG_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PETSEG_CHECKPOINTS", str(tmp_path / "extra"))
    return tmp_path


def test_round_trip_restores_model_and_metadata(tiny_semantic_checkpoint: Path) -> None:
    model, metadata = load_checkpoint(tiny_semantic_checkpoint)
    assert metadata["arch"] == "unet" and metadata["task"] == "semantic"
    assert metadata["class_names"] == ["background", "cat", "dog"]
    assert metadata["input_size"] == 64 and "created" in metadata and "package_version" in metadata
    torch.manual_seed(1)  # the fixture used seed 0
    reference = build_model("unet", metadata["config"]).eval()
    x = torch.rand(1, 3, 64, 64)
    assert not torch.allclose(reference(x), model(x))  # weights really came from the file...
    reference.load_state_dict(model.state_dict())
    assert torch.equal(reference(x), model(x))  # ...and rebuild the same architecture


def test_save_leaves_no_temp_files(tiny_semantic_checkpoint: Path, tmp_path: Path) -> None:
    model, metadata = load_checkpoint(tiny_semantic_checkpoint)
    target = save_checkpoint(tmp_path / "copy.safetensors", model, metadata)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    with pytest.raises(ValueError, match="safetensors"):
        save_checkpoint(tmp_path / "copy.pt", model, metadata)


def test_truncated_file_gives_one_line_reason(tiny_semantic_checkpoint: Path, tmp_path: Path) -> None:
    data = tiny_semantic_checkpoint.read_bytes()
    broken = tmp_path / "truncated.safetensors"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(broken)
    assert "truncated.safetensors" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("content", [b"", b"\x00" * 3, b"not a checkpoint at all, just text"])
def test_garbage_files_are_rejected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="garbage.safetensors"):
        read_metadata(path)


def test_pickle_is_refused_without_being_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self):  # runs on unpickling: must never happen
            return (marker.touch, ())

    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)
    assert not marker.exists()


def test_mismatched_weights_name_the_problem(tiny_semantic_checkpoint: Path, tmp_path: Path) -> None:
    _, metadata = load_checkpoint(tiny_semantic_checkpoint)
    wider = build_model("unet", {**metadata["config"], "base": 16})
    path = save_checkpoint(tmp_path / "mismatch.safetensors", wider, metadata)  # metadata says base 8
    with pytest.raises(CheckpointError, match="do not match architecture unet"):
        load_checkpoint(path)


def test_unknown_architecture_and_missing_metadata(tiny_semantic_checkpoint: Path, tmp_path: Path) -> None:
    model, metadata = load_checkpoint(tiny_semantic_checkpoint)
    bad_arch = save_checkpoint(tmp_path / "alien.safetensors", model, {**metadata, "arch": "alien"})
    with pytest.raises(CheckpointError, match="unknown architecture 'alien'"):
        read_metadata(bad_arch)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="without PetSeg metadata"):
        read_metadata(plain)


def test_discovery_lists_every_folder_with_reasons(
    isolated_folders: Path, tiny_semantic_checkpoint: Path, tiny_prompt_checkpoint: Path
) -> None:
    run_dir = isolated_folders / "runs" / "unet-20260101-000000"
    run_dir.mkdir(parents=True)
    shutil.copy(tiny_semantic_checkpoint, run_dir / "best.safetensors")
    extra = isolated_folders / "extra"
    extra.mkdir()
    shutil.copy(tiny_prompt_checkpoint, extra / "prompt.safetensors")
    (extra / "old.pth").write_bytes(b"pickle")
    (extra / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")

    entries = {e.path.name: e for e in discover_checkpoints()}
    assert entries["best.safetensors"].source == TRAINING and entries["best.safetensors"].loadable
    assert entries["prompt.safetensors"].source == ENVIRONMENT and entries["prompt.safetensors"].task == "prompt"
    assert not entries["old.pth"].loadable and "pickle" in entries["old.pth"].error
    assert not entries["broken.safetensors"].loadable
    assert all("\n" not in e.describe() for e in entries.values())
    own_prompt = [e.path.name for e in discover_checkpoints(task="prompt") if e.source != BUNDLED]
    assert own_prompt == ["prompt.safetensors"]
    assert search_folders()[0][0] == BUNDLED


def test_metadata_is_plain_json(tiny_prompt_checkpoint: Path) -> None:
    metadata = read_metadata(tiny_prompt_checkpoint)
    assert json.loads(json.dumps(metadata)) == metadata
    assert metadata["task"] == "prompt" and set(metadata["normalization"]) == {"mean", "std"}
