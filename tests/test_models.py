"""Tests of the architectures, encoders and prompt maps (tiny configs, 32-64 px inputs)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from models.checkpoint import load_checkpoint, make_metadata, save_checkpoint
from models.encoders import (
    EFFNET_TENSORS,
    SIGNED,
    ClipRN50Encoder,
    EfficientNetLite0Encoder,
    PretrainedWeightsMissing,
    effnet_lite0_state_dict,
    load_imagenet_weights,
)
from models.prompts import render_prompt_maps, render_prompt_maps_batch
from models.classes import PROMPT, SEMANTIC
from models.registry import architecture_names, build_model, get_architecture

TINY = {"base": 8, "depth": 3}
SIZE = 64


def _inputs(arch: str, batch: int = 2, size: int = SIZE) -> tuple[torch.Tensor, ...]:
    image = torch.randn(batch, 3, size, size)
    if get_architecture(arch).task == PROMPT:
        return image, torch.rand(batch, 4, size, size)
    return (image,)


def _bn_stats(module: torch.nn.Module) -> list[torch.Tensor]:
    return [m.running_mean.clone() for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_the_contract_architectures_are_registered() -> None:
    assert set(architecture_names(SEMANTIC)) == {"unet", "autoencoder", "clip", "clip_unet"}
    assert architecture_names(PROMPT) == ["prompt_unet"]


@pytest.mark.parametrize("arch", architecture_names())
def test_every_architecture_builds_tiny_with_the_right_output(arch: str) -> None:
    model = build_model(arch, TINY).eval()
    channels = 1 if get_architecture(arch).task == PROMPT else 3
    with torch.no_grad():
        out = model(*_inputs(arch))
    assert out.shape == (2, channels, SIZE, SIZE)
    assert set(model.normalization) == {"mean", "std"} and len(model.normalization["std"]) == 3


@pytest.mark.parametrize(
    "config",
    [
        {"base": 8, "depth": 3, "bilinear": False, "dropout": 0.3},
        {"base": 8, "depth": 5, "in_channels": 1},
        {"base": 8, "encoder": "effnet_lite0"},
        {"base": 8, "depth": 3, "encoder": "effnet_lite0", "bilinear": False},
    ],
)
def test_unet_variants(config: dict) -> None:
    model = build_model("unet", config).eval()
    with torch.no_grad():
        out = model(torch.randn(1, config.get("in_channels", 3), SIZE, SIZE))
    assert out.shape == (1, 3, SIZE, SIZE)


def test_normalization_follows_the_encoder() -> None:
    assert build_model("unet", {"base": 8, "encoder": "effnet_lite0"}).normalization == SIGNED
    assert build_model("unet", TINY).normalization["mean"] == [0.485, 0.456, 0.406]
    assert build_model("clip", {"base": 8, "depth": 1}).normalization["mean"][0] == pytest.approx(0.48145466)


def test_input_sides_must_be_multiples_of_the_encoder_stride() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        build_model("unet", TINY)(torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("unet", {"base": 8, "encoder": "effnet_lite0"})(torch.randn(1, 3, 48, 48))


def test_unknown_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown encoder"):
        build_model("unet", {"base": 8, "encoder": "resnet"})


@pytest.mark.parametrize("arch", ["unet", "prompt_unet"])
def test_training_overfits_one_tiny_batch(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, TINY).train()
    inputs = _inputs(arch, size=32)
    if arch == "unet":
        target = torch.randint(0, 3, (2, 32, 32))
        loss_fn = F.cross_entropy
    else:
        target = (torch.rand(2, 1, 32, 32) > 0.5).float()
        loss_fn = F.binary_cross_entropy_with_logits
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = loss_fn(model(*inputs), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("arch", ["clip", "clip_unet", "autoencoder"])
def test_frozen_encoders_get_no_gradient_and_keep_batchnorm_stats(arch: str) -> None:
    model = build_model(arch, TINY).train()
    encoder = model.encoder
    assert not encoder.training and all(not p.requires_grad for p in encoder.parameters())
    stats = _bn_stats(encoder)
    model(torch.randn(2, 3, SIZE, SIZE)).sum().backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert all(torch.equal(a, b) for a, b in zip(stats, _bn_stats(encoder)))
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_autoencoder_reconstructs_and_can_unfreeze_its_encoder() -> None:
    model = build_model("autoencoder", {**TINY, "freeze_encoder": False}).train()
    x = torch.randn(2, 3, SIZE, SIZE)
    stats = _bn_stats(model.encoder)
    reconstruction = model.reconstruct(x)
    assert reconstruction.shape == x.shape
    F.mse_loss(reconstruction, x).backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert not torch.equal(stats[0], _bn_stats(model.encoder)[0])
    model.set_encoder_frozen(True)
    assert not model.encoder.training and not any(p.requires_grad for p in model.encoder.parameters())
    model.set_encoder_frozen(False)
    assert model.encoder.training


@pytest.mark.parametrize("config", [TINY, {"base": 8, "depth": 3, "encoder": "effnet_lite0"}])
def test_prompt_unet_decode_of_cached_features_equals_forward(config: dict) -> None:
    model = build_model("prompt_unet", config).eval()
    image = torch.randn(1, 3, SIZE, SIZE)
    prompts = torch.rand(3, 4, SIZE, SIZE)
    with torch.no_grad():
        features = model.encode_image(image)
        decoded = model.decode(features, prompts)  # features of one image broadcast over 3 prompt sets
        forward = model(image.expand(3, -1, -1, -1), prompts)
    assert decoded.shape == (3, 1, SIZE, SIZE)
    torch.testing.assert_close(decoded, forward, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(decoded[0], decoded[1])  # the prompts matter


def test_click_is_a_disk_of_the_radius_at_x_y() -> None:
    maps = render_prompt_maps(32, positives=[(20, 5)], negatives=[(3, 25)], radius=3)
    assert maps.shape == (4, 32, 32) and maps.dtype == torch.float32
    v, u = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    assert torch.equal(maps[0], (((u - 20) ** 2 + (v - 5) ** 2) <= 9).float())
    assert torch.equal(maps[1], (((u - 3) ** 2 + (v - 25) ** 2) <= 9).float())
    assert maps[0, 5, 20] == 1 and maps[0, 20, 5] == 0
    assert maps[2:].sum() == 0


def test_clicks_near_or_over_the_border_are_clipped() -> None:
    maps = render_prompt_maps(16, positives=[(0, 0), (17, 8)], negatives=[], radius=2)
    assert maps[0, :3, :3].sum() == 6  # the quarter disk in the corner
    assert maps[0, 8, 15] == 1  # a click 2 pixels outside still reaches the edge


def test_box_channel_is_inclusive_and_clipped() -> None:
    maps = render_prompt_maps(16, [], [], box=(3, 4, 6, 20))
    expected = torch.zeros(16, 16)
    expected[4:16, 3:7] = 1
    assert torch.equal(maps[2], expected)


def test_previous_mask_is_copied() -> None:
    previous = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    maps = render_prompt_maps(16, [], [], prev_mask=previous)
    assert torch.equal(maps[3], torch.from_numpy(previous))
    with pytest.raises(ValueError, match="16x16"):
        render_prompt_maps(16, [], [], prev_mask=np.zeros((8, 8)))


def test_batch_rendering_matches_single_rendering() -> None:
    prev = torch.rand(16, 16)
    batch = render_prompt_maps_batch(
        16, [[(2, 3)], []], [[], [(9, 9), (1, 14)]], [None, (0, 0, 4, 4)], [prev, None]
    )
    assert torch.equal(batch[0], render_prompt_maps(16, [(2, 3)], [], prev_mask=prev))
    assert torch.equal(batch[1], render_prompt_maps(16, [], [(9, 9), (1, 14)], box=(0, 0, 4, 4)))


def test_effnet_weights_map_in_order_onto_timm_and_classify_pets(pet_photos: list[Path]) -> None:
    import timm

    state = effnet_lite0_state_dict()
    assert sum(not k.endswith("num_batches_tracked") for k in state) == EFFNET_TENSORS
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    assert load_imagenet_weights(classifier) == EFFNET_TENSORS  # all 247, shape by shape, in order
    mean, std = np.array(SIGNED["mean"], np.float32), np.array(SIGNED["std"], np.float32)
    top = []
    for path in pet_photos[:2]:  # a cat, then a dog
        rgb = np.asarray(Image.open(path).convert("RGB").resize((224, 224)), np.float32) / 255
        x = torch.from_numpy((rgb - mean) / std).permute(2, 0, 1)[None]
        with torch.no_grad():
            top.append(classifier(x).argmax().item())
    assert 281 <= top[0] <= 285, "a cat photo should be an ImageNet cat"
    assert 151 <= top[1] <= 268, "a dog photo should be an ImageNet dog breed"


@pytest.mark.parametrize("depth, size", [(5, 64), (3, 72), (5, 97)])
def test_plain_effnet_matches_timm_layout_and_outputs(depth: int, size: int) -> None:
    """models.effnet_lite is timm's tf_efficientnet_lite0 (features_only) without timm: same keys, same maps."""
    import timm

    reference = timm.create_model(
        "tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=tuple(range(depth))
    ).eval()
    ours = EfficientNetLite0Encoder(depth=depth).model.eval()
    load_imagenet_weights(reference)
    reference_state = reference.state_dict()
    ours.load_state_dict({k: reference_state[k] for k in ours.state_dict()})  # every key exists in timm's
    x = torch.rand(2, 3, size, size) * 2 - 1  # odd sizes exercise the asymmetric "same" padding
    with torch.no_grad():
        expected, actual = reference(x), ours(x)
    assert [f.shape for f in actual] == [f.shape for f in expected]
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


def test_pretrained_effnet_encoder_differs_from_random_init() -> None:
    torch.manual_seed(0)
    model = build_model("unet", {"base": 8, "encoder": "effnet_lite0"}).eval()
    x = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        before = model.encoder(x)[-1]
        model.load_pretrained()
        after = model.encoder(x)[-1]
    assert not torch.allclose(before, after, atol=1e-3)
    truncated = EfficientNetLite0Encoder(depth=3)
    assert truncated.channels == [16, 24, 40]
    assert load_imagenet_weights(truncated.model) < EFFNET_TENSORS - 7


def test_scratch_encoder_has_no_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model("unet", TINY).load_pretrained("imagenet")


@pytest.mark.parametrize("arch", ["unet", "prompt_unet"])
def test_checkpoint_round_trip_reproduces_outputs(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(arch, TINY)
    with torch.no_grad():
        model.train()(*_inputs(arch))  # move the BatchNorm statistics away from their defaults
    model.eval()
    metadata = make_metadata(arch, TINY, input_size=SIZE, normalization=model.normalization)
    path = save_checkpoint(tmp_path / f"{arch}.safetensors", model, metadata)
    loaded, loaded_metadata = load_checkpoint(path)
    inputs = _inputs(arch)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs), model(*inputs))
    assert loaded_metadata["normalization"] == model.normalization


def test_clip_openai_weights_missing_from_cache_fail_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    model = build_model("clip", {"base": 8, "depth": 1})  # the CLIP stem only: quick to build
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsMissing, match="not in the local cache.*local weights file"):
        model.load_pretrained("openai")
    assert time.monotonic() - start < 5


def test_clip_loads_a_local_safetensors_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = ClipRN50Encoder(depth=2)
    path = tmp_path / "rn50.safetensors"
    save_file({f"visual.{k}": v.contiguous() for k, v in source.visual.state_dict().items()}, str(path))
    model = build_model("clip", {"base": 8, "depth": 2})
    model.load_pretrained(str(path))
    torch.testing.assert_close(model.encoder.visual.conv1.weight, source.visual.conv1.weight)
    save_file({"conv1.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="not CLIP RN50 weights"):
        model.load_pretrained(str(tmp_path / "bad.safetensors"))
    with pytest.raises(PretrainedWeightsMissing, match="not found"):
        model.load_pretrained(str(tmp_path / "absent.safetensors"))


class _Holder(torch.nn.Module):
    """Holds a CLIP tower under ``visual`` like OpenAI's TorchScript RN50.pt."""

    def __init__(self, visual: torch.nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual.conv1(x)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_clip_loads_a_torchscript_archive_with_a_warning(tmp_path: Path) -> None:
    source = ClipRN50Encoder(depth=1)
    path = tmp_path / "RN50.pt"
    torch.jit.trace(_Holder(source.visual), torch.randn(1, 3, 32, 32)).save(str(path))
    model = build_model("clip", {"base": 8, "depth": 1})
    with pytest.warns(UserWarning, match="TorchScript"):
        model.load_pretrained(str(path))
    torch.testing.assert_close(model.encoder.visual.conv1.weight, source.visual.conv1.weight)
