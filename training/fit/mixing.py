"""``--mix-parent``: after a fine-tune's last epoch, its weights mixed back with the starting model's.

Weight-space ensembling (WiSE-FT, Wortsman et al., CVPR 2022): the straight line between the
starting weights and the fine-tuned ones often holds points that keep most of the gain on the new
photos while forgetting far less than the fine-tuned end. Each mixture ``start + alpha * (last -
start)`` is judged exactly like an epoch (it must beat the best so far on the photos kept aside
and, with ``--replay``, keep the replayed photos' mIoU within the tolerance); a winner becomes
``best.safetensors``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from training.fit.run import Progress

MIX_ALPHAS = (0.75, 0.5, 0.25)  # share of the fine-tuned change kept, most first


def mixed_weights(start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """``start + alpha * (tuned - start)`` for floating tensors; counters (integer buffers) from ``tuned``."""
    return {name: torch.lerp(start[name].to(value), value, alpha) if value.is_floating_point() else value
            for name, value in tuned.items()}


def try_mixtures(model: nn.Module, start: dict[str, torch.Tensor], progress: Progress,
                 validate: Callable[[dict[str, Any]], dict[str, Any]],
                 judged: Callable[[float, dict[str, Any], dict[str, Any], bool], None]) -> float | None:
    """Judge ``model``'s weights mixed with ``start`` at each of :data:`MIX_ALPHAS`, like an epoch:
    ``validate(row)`` returns the metrics (and fills the log ``row``), and ``judged(alpha, row,
    metrics, improved)`` is told each verdict while that mixture is loaded (to log it, and save it
    when improved). The model ends with its own weights again. Returns the winning alpha, or None."""
    tuned = {name: value.detach().clone() for name, value in model.state_dict().items()}
    winner = None
    for alpha in MIX_ALPHAS:
        model.load_state_dict(mixed_weights(start, tuned, alpha))
        row: dict[str, Any] = {"mix": alpha}
        metrics = validate(row)
        improved = progress.beats(metrics["score"], row)
        if improved:
            progress.best, progress.mixed, winner = metrics["score"], alpha, alpha
        judged(alpha, row, metrics, improved)
    model.load_state_dict(tuned)
    return winner
