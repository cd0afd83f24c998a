"""Iterative click simulation for training and validating the prompt model (RITM-style).

Training (:class:`PromptTrainingStep`): for each image of a batch the target object is the pet
(cat or dog pixels; void ignored). The initial prompt is 1-3 positive clicks well inside the
object (sampled with a distance transform, away from its border), or a jittered box around it, or
a box plus one click (random per sample). Then, under ``torch.no_grad``, 0..N rounds (random per
batch) of corrective clicks: the model runs, the next click goes into its largest error
(positive in a missed region, negative in a false one; :func:`training.clicks.largest_error_click`)
and its mask probabilities are fed back as the previous-mask channel. The final forward pass,
with gradients, is the one the loss sees. The image is encoded once per batch; only the light
decoder runs per round. With ``judge_first_prompt`` the initial prompt's own prediction is
judged too (with gradients), as Segment Anything trains every round: the corrective rounds leave
the one-click case rare in the final pass, and one click is what a user tries first.

Validation (:func:`simulate_eval_clicks`): the standard protocol from an empty prediction, each
click at the error pixel farthest from the error boundary (:func:`training.clicks.next_click`).

Coordinates are model pixels, ``(x, y)``; all prompt maps come from
:func:`models.prompts.render_prompt_maps`, exactly as the app renders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import nn

from models.classes import VOID

from training.clicks import largest_error_click, next_click

# Initial prompt kinds and their probabilities.
PROMPT_KINDS = ("clicks", "box", "box+click")
PROMPT_PROBS = (0.5, 0.3, 0.2)
BOX_JITTER = 0.1  # each box edge moves by up to this fraction of the object's extent


def binary_target(mask: torch.Tensor) -> torch.Tensor:
    """Label mask (0 bg, 1 cat, 2 dog, 255 void/padding) -> object target (0, 1, 255 void)."""
    void = mask == VOID
    obj = (mask == 1) | (mask == 2)
    return torch.where(void, torch.full_like(mask, VOID), obj.to(mask.dtype))


def _inner_distance(obj: np.ndarray) -> np.ndarray:
    """Distance of each object pixel to the object's border (image edge counts as border)."""
    padded = np.pad(obj.astype(np.uint8), 1, mode="constant")
    return cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]


@dataclass
class Prompt:
    """One image's prompt in model pixels."""

    positives: list[tuple[int, int]] = field(default_factory=list)
    negatives: list[tuple[int, int]] = field(default_factory=list)
    box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 (inclusive)

    def add(self, click: tuple[int, int, bool] | None) -> None:
        if click is None:
            return
        x, y, positive = click
        (self.positives if positive else self.negatives).append((int(x), int(y)))


def sample_clicks_inside(obj: np.ndarray, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``count`` positive clicks inside ``obj``, away from its border.

    The first click is drawn among the pixels deeper than half the maximum depth (near the
    centre); further clicks among those deeper than a fifth of it, so they spread out.
    """
    if not obj.any():
        return []
    dist = _inner_distance(obj)
    top = float(dist.max())
    clicks = []
    for i in range(count):
        threshold = top * (0.5 if i == 0 else 0.2)
        ys, xs = np.nonzero(dist >= max(threshold, min(1.0, top)))
        if len(ys) == 0:
            break
        j = int(rng.integers(len(ys)))
        clicks.append((int(xs[j]), int(ys[j])))
    return clicks


def jittered_box(obj: np.ndarray, rng: np.random.Generator, jitter: float = BOX_JITTER) -> tuple[int, int, int, int] | None:
    """The object's bounding box with each edge moved by up to ``jitter`` of its extent."""
    ys, xs = np.nonzero(obj)
    if len(ys) == 0:
        return None
    h, w = obj.shape
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    dx = rng.uniform(-jitter, jitter, 2) * bw
    dy = rng.uniform(-jitter, jitter, 2) * bh
    nx0 = int(np.clip(round(x0 + dx[0]), 0, w - 1))
    nx1 = int(np.clip(round(x1 + dx[1]), 0, w - 1))
    ny0 = int(np.clip(round(y0 + dy[0]), 0, h - 1))
    ny1 = int(np.clip(round(y1 + dy[1]), 0, h - 1))
    if nx1 <= nx0:
        nx0, nx1 = int(x0), int(x1)
    if ny1 <= ny0:
        ny0, ny1 = int(y0), int(y1)
    return nx0, ny0, nx1, ny1


def sample_initial_prompt(obj: np.ndarray, rng: np.random.Generator) -> Prompt:
    """Clicks, a jittered box, or a box plus a click (random choice) for object ``obj``."""
    kind = PROMPT_KINDS[int(rng.choice(len(PROMPT_KINDS), p=PROMPT_PROBS))]
    prompt = Prompt()
    if kind == "clicks":
        prompt.positives = sample_clicks_inside(obj, int(rng.integers(1, 4)), rng)
    else:
        prompt.box = jittered_box(obj, rng)
        if kind == "box+click":
            prompt.positives = sample_clicks_inside(obj, 1, rng)
    return prompt


def render_batch(
    size: int, prompts: list[Prompt], prev: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Bx4xSxS prompt maps (``prev`` Bx1xSxS or BxSxS probabilities, or None), rendered exactly
    as the app renders them (:func:`models.prompts.render_prompt_maps_batch`)."""
    from models.prompts import render_prompt_maps_batch

    prev_cpu = None if prev is None else list(prev.detach().float().reshape(len(prompts), size, size).cpu())
    maps = render_prompt_maps_batch(
        size,
        [p.positives for p in prompts],
        [p.negatives for p in prompts],
        [p.box for p in prompts],
        prev_cpu,
    )
    return maps.to(device)


def _prompt_layout(maps: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``maps`` in the dtype and memory format of ``images`` (for the pass with gradients)."""
    maps = maps.to(images.dtype)
    if images.is_contiguous(memory_format=torch.channels_last):
        maps = maps.contiguous(memory_format=torch.channels_last)
    return maps


def _encode(model: nn.Module, images: torch.Tensor):
    return model.encode_image(images) if hasattr(model, "encode_image") else None


def _decode(model: nn.Module, features, images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    if features is None:
        return model(images, maps)
    return model.decode(features, maps)


class PromptTrainingStep(nn.Module):
    """Wraps the prompt model so one ``forward`` runs the whole simulated interaction.

    Wrapping (rather than calling ``encode_image``/``decode`` from the trainer) keeps the
    gradient path inside ``forward``, which DistributedDataParallel needs to synchronise grads.
    ``forward(images, masks, rounds, seed)`` returns (final logits Bx1xSxS, object target BxSxS,
    the initial prompt's logits or None). The latter come only with ``judge_first_prompt`` and
    corrective rounds (without rounds the final pass is the initial prompt's); the trainer weighs them.
    """

    def __init__(self, model: nn.Module, judge_first_prompt: bool = False) -> None:
        super().__init__()
        self.model = model
        self.judge_first_prompt = judge_first_prompt

    def forward(self, images: torch.Tensor, masks: torch.Tensor, rounds: int, seed: int):
        rng = np.random.default_rng(seed)
        target = binary_target(masks)
        target_np = target.cpu().numpy().astype(np.uint8)
        size = images.shape[-1]
        prompts = [sample_initial_prompt(t == 1, rng) for t in target_np]
        maps = render_batch(size, prompts, None, images.device)
        features = _encode(self.model, images)
        first = None
        if self.judge_first_prompt and rounds:
            first = _decode(self.model, features, images, _prompt_layout(maps, images))
        for round_index in range(rounds):
            with torch.no_grad():
                logits = first if round_index == 0 and first is not None else _decode(self.model, features, images, maps)
                probs = torch.sigmoid(logits.detach().float())
                pred = (probs[:, 0] > 0.5).cpu().numpy()
                for i, prompt in enumerate(prompts):
                    prompt.add(largest_error_click(pred[i], target_np[i], rng=rng))
                maps = render_batch(size, prompts, probs, images.device)
        return _decode(self.model, features, images, _prompt_layout(maps, images)), target, first


@torch.no_grad()
def simulate_eval_clicks(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, clicks: int = 3) -> list[torch.Tensor]:
    """Probabilities (Bx SxS, CPU float32) after 1..``clicks`` evaluation-protocol clicks.

    The first click goes to the object pixel farthest from its border (the error of an empty
    prediction); each next one to the current largest error, the previous mask fed back.
    """
    target_np = binary_target(masks).cpu().numpy().astype(np.uint8)
    size = images.shape[-1]
    batch = images.shape[0]
    prompts = [Prompt() for _ in range(batch)]
    pred = np.zeros((batch, size, size), dtype=bool)
    probs = None
    features = _encode(model, images)
    out = []
    for _ in range(clicks):
        for i, prompt in enumerate(prompts):
            prompt.add(next_click(pred[i], target_np[i]))
        maps = render_batch(size, prompts, probs, images.device).to(images.dtype)
        probs = torch.sigmoid(_decode(model, features, images, maps).float())
        pred = (probs[:, 0] > 0.5).cpu().numpy()
        out.append(probs[:, 0].cpu())
    return out
