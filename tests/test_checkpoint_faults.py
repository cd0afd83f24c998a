"""Checkpoints with structurally wrong metadata or a tensor table that does not fit the file: each
gives one line naming the file, and discovery lists it as unusable and goes on."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Callable

import pytest
from safetensors.torch import load_file, save_file

from models.checkpoint import METADATA_KEY, CheckpointError, load_checkpoint, read_metadata
from models.discovery import discover_checkpoints
from models.predictor import find_checkpoint


def _with_metadata(source: Path, target: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    """``source``'s weights saved to ``target`` with its metadata replaced by ``change(metadata)``."""
    metadata = read_metadata(source)
    save_file(load_file(str(source)), str(target), metadata={METADATA_KEY: json.dumps(change(metadata))})
    return target


def _edit(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda metadata: {**metadata, key: value}


BAD_METADATA = {
    "a list": (lambda m: [m], "not a JSON object"),
    "a JSON string": (lambda m: "unet", "not a JSON object"),
    "int architecture": (_edit("arch", 5), "unknown architecture 5"),
    "list config": (_edit("config", [8, 3]), "config is not a JSON object"),
    "task of another architecture": (_edit("task", "prompt"), "does not match architecture unet"),
    "input_size 4096": (_edit("input_size", 4096), "input_size 4096"),
    "input_size as text": (_edit("input_size", "64"), "input_size '64'"),
    "std 0": (_edit("normalization", {"mean": [0.5] * 3, "std": [0.0, 0.2, 0.2]}), "std > 0"),
    "NaN mean": (_edit("normalization", {"mean": [float("nan")] * 3, "std": [0.2] * 3}), "finite"),
    "two-channel mean": (_edit("normalization", {"mean": [0.5] * 2, "std": [0.2] * 3}), "3 finite numbers"),
    "list metrics": (_edit("metrics", [0.9]), "metrics is not a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_bad_metadata_gives_one_line(case: str, tiny_semantic_checkpoint: Path, tmp_path: Path) -> None:
    change, reason = BAD_METADATA[case]
    path = _with_metadata(tiny_semantic_checkpoint, tmp_path / "bad.safetensors", change)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert message.startswith("bad.safetensors: ") and reason in message and "\n" not in message


def _rewrite_header(source: Path, target: Path, edit: Callable[[dict[str, Any]], None], keep_bytes: int | None = None) -> Path:
    """``source`` with its safetensors header JSON edited in place (the data bytes unchanged)."""
    data = source.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    edit(header)
    encoded = json.dumps(header).encode()
    body = data[8 + length :]
    target.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body[: keep_bytes])
    return target


def _first_tensor(header: dict[str, Any]) -> dict[str, Any]:
    return header[next(k for k in header if k != "__metadata__")]


def test_truncated_weights_are_found_by_reading_the_header_only(tiny_semantic_checkpoint: Path, tmp_path: Path) -> None:
    path = _rewrite_header(tiny_semantic_checkpoint, tmp_path / "cut.safetensors", lambda h: None, keep_bytes=1000)
    with pytest.raises(CheckpointError, match=r"^cut.safetensors: truncated: tensor .* the file holds 1000$"):
        read_metadata(path)


def test_a_declared_huge_tensor_is_refused_before_allocating(tiny_semantic_checkpoint: Path, tmp_path: Path) -> None:
    def huge(header: dict[str, Any]) -> None:
        tensor = _first_tensor(header)
        tensor["shape"] = [1 << 20, 1 << 20, 1024]  # 4 TB of float32
        tensor["data_offsets"] = [tensor["data_offsets"][0], tensor["data_offsets"][0] + (1 << 42)]

    path = _rewrite_header(tiny_semantic_checkpoint, tmp_path / "huge.safetensors", huge)
    with pytest.raises(CheckpointError, match=r"^huge.safetensors: truncated: tensor "):
        read_metadata(path)


def test_a_tensor_whose_bytes_do_not_match_its_shape_is_refused(tiny_semantic_checkpoint: Path, tmp_path: Path) -> None:
    def wrong_shape(header: dict[str, Any]) -> None:
        _first_tensor(header)["shape"] = [7, 7, 7, 7]

    path = _rewrite_header(tiny_semantic_checkpoint, tmp_path / "shape.safetensors", wrong_shape)
    with pytest.raises(CheckpointError, match=r"^shape.safetensors: tensor .* declares [A-Z0-9]+ \[7, 7, 7, 7\] but stores 8 bytes$"):
        read_metadata(path)


def test_discovery_lists_every_bad_file_and_still_finds_the_good_one(
    tiny_semantic_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for index, case in enumerate(sorted(BAD_METADATA)):
        _with_metadata(tiny_semantic_checkpoint, folder / f"bad{index:02d}.safetensors", BAD_METADATA[case][0])
    good = folder / "zz-good.safetensors"
    good.write_bytes(tiny_semantic_checkpoint.read_bytes())
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PETSEG_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PETSEG_CHECKPOINTS", str(folder))
    entries = {e.path.name: e for e in discover_checkpoints() if e.path.parent == folder}
    assert len(entries) == len(BAD_METADATA) + 1
    unusable = [e for e in entries.values() if not e.loadable]
    assert len(unusable) == len(BAD_METADATA)
    assert all("\n" not in e.describe() and "unusable" in e.describe() for e in unusable)
    assert entries[good.name].loadable
    assert good in [e.path for e in discover_checkpoints(task="semantic")]
    assert find_checkpoint("semantic").is_file()  # choosing a model is not stopped by the bad files
