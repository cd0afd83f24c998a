"""The eight image perturbations of the original robustness study, ten severity levels each.

Every perturbation is a function ``(rgb uint8 HxWx3, level 0..9, rng=None) -> rgb uint8`` that
works on 0-255 float values and clips back to 0-255. Level index 0 (the study's "level 1") is the
clean image for all of them. ``rng`` is a ``numpy.random.Generator`` or an int seed (only noise,
occlusion and salt and pepper draw random numbers).

``PERTURBATIONS`` maps a name to ``Perturbation(function, labels, parameter, values)``: the level
labels (``"sigma=2"``...), the parameter's name and its ten values.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import cv2
import numpy as np

LEVELS = 10

NOISE_SIGMAS = tuple(range(0, 20, 2))
BLUR_REPEATS = tuple(range(10))
CONTRAST_UP = (1.00, 1.01, 1.02, 1.03, 1.04, 1.05, 1.10, 1.15, 1.20, 1.25)
CONTRAST_DOWN = (1.00, 0.95, 0.90, 0.85, 0.80, 0.60, 0.40, 0.30, 0.20, 0.10)
BRIGHTNESS_STEPS = tuple(range(0, 50, 5))
OCCLUSION_SIDES = tuple(range(0, 50, 5))
SALT_PEPPER_DENSITIES = tuple(round(0.02 * i, 2) for i in range(10))

GAUSSIAN_KERNEL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 16.0


def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check(rgb: np.ndarray, level: int) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3:
        raise ValueError(f"expected an HxWxC uint8 image, got {rgb.dtype} {rgb.shape}")
    if not 0 <= int(level) < LEVELS:
        raise ValueError(f"level index must be 0..{LEVELS - 1}, got {level}")
    return rgb


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def gaussian_noise(rgb: np.ndarray, level: int, rng=None) -> np.ndarray:
    """Add i.i.d. Gaussian noise of standard deviation 0, 2, ..., 18 (per pixel and channel)."""
    rgb = _check(rgb, level)
    sigma = NOISE_SIGMAS[level]
    if sigma == 0:
        return rgb.copy()
    noise = _generator(rng).normal(0.0, sigma, size=rgb.shape)
    return _to_uint8(rgb.astype(np.float32) + noise)


def gaussian_blur(rgb: np.ndarray, level: int, rng=None) -> np.ndarray:
    """Convolve 0..9 times with the 3x3 kernel [[1,2,1],[2,4,2],[1,2,1]]/16 (reflected borders),
    in float, rounding only at the end."""
    rgb = _check(rgb, level)
    values = rgb.astype(np.float32)
    for _ in range(BLUR_REPEATS[level]):
        values = cv2.filter2D(values, -1, GAUSSIAN_KERNEL, borderType=cv2.BORDER_REFLECT_101)
    return _to_uint8(values)


def _scale(rgb: np.ndarray, factor: float) -> np.ndarray:
    return _to_uint8(rgb.astype(np.float32) * factor)


def contrast_up(rgb: np.ndarray, level: int, rng=None) -> np.ndarray:
    """Multiply pixel values by 1.00 ... 1.25 (the original study's contrast change)."""
    return _scale(_check(rgb, level), CONTRAST_UP[level])


def contrast_down(rgb: np.ndarray, level: int, rng=None) -> np.ndarray:
    """Multiply pixel values by 1.00 ... 0.10."""
    return _scale(_check(rgb, level), CONTRAST_DOWN[level])


def _shift(rgb: np.ndarray, delta: float) -> np.ndarray:
    return _to_uint8(rgb.astype(np.float32) + delta)


def brightness_up(rgb: np.ndarray, level: int, rng=None) -> np.ndarray:
    """Add 0, 5, ..., 45 to every pixel value."""
    return _shift(_check(rgb, level), BRIGHTNESS_STEPS[level])


def brightness_down(rgb: np.ndarray, level: int, rng=None) -> np.ndarray:
    """Subtract 0, 5, ..., 45 from every pixel value."""
    return _shift(_check(rgb, level), -BRIGHTNESS_STEPS[level])


def occlusion(rgb: np.ndarray, level: int, rng=None) -> np.ndarray:
    """Paint one black square of side 0, 5, ..., 45 px at a random place (inside the image)."""
    rgb = _check(rgb, level)
    out = rgb.copy()
    side = OCCLUSION_SIDES[level]
    if side == 0:
        return out
    h, w = rgb.shape[:2]
    side_y, side_x = min(side, h), min(side, w)
    gen = _generator(rng)
    y0 = int(gen.integers(0, h - side_y + 1))
    x0 = int(gen.integers(0, w - side_x + 1))
    out[y0 : y0 + side_y, x0 : x0 + side_x] = 0
    return out


def salt_and_pepper(rgb: np.ndarray, level: int, rng=None) -> np.ndarray:
    """Set a fraction 0.00, 0.02, ..., 0.18 of the pixels (all channels) to black or white,
    half each on average."""
    rgb = _check(rgb, level)
    out = rgb.copy()
    density = SALT_PEPPER_DENSITIES[level]
    if density == 0:
        return out
    u = _generator(rng).random(rgb.shape[:2])
    out[u < density / 2] = 255
    out[(u >= density / 2) & (u < density)] = 0
    return out


class Perturbation(NamedTuple):
    function: Callable[..., np.ndarray]
    labels: tuple[str, ...]
    parameter: str
    values: tuple[float, ...]


def _entry(function, parameter: str, values, fmt: str = "{}") -> Perturbation:
    values = tuple(values)
    return Perturbation(function, tuple(f"{parameter}={fmt.format(v)}" for v in values), parameter, values)


PERTURBATIONS: dict[str, Perturbation] = {
    "gaussian_noise": _entry(gaussian_noise, "sigma", NOISE_SIGMAS),
    "gaussian_blur": _entry(gaussian_blur, "passes", BLUR_REPEATS),
    "contrast_up": _entry(contrast_up, "factor", CONTRAST_UP, "{:.2f}"),
    "contrast_down": _entry(contrast_down, "factor", CONTRAST_DOWN, "{:.2f}"),
    "brightness_up": _entry(brightness_up, "delta", BRIGHTNESS_STEPS, "+{}"),
    "brightness_down": _entry(brightness_down, "delta", tuple(-v for v in BRIGHTNESS_STEPS)),
    "occlusion": _entry(occlusion, "side", OCCLUSION_SIDES),
    "salt_and_pepper": _entry(salt_and_pepper, "density", SALT_PEPPER_DENSITIES, "{:.2f}"),
}


def perturb(rgb: np.ndarray, name: str, level: int, rng=None) -> np.ndarray:
    """Apply perturbation ``name`` at level index ``level`` (0 = clean)."""
    try:
        entry = PERTURBATIONS[name]
    except KeyError:
        raise KeyError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}") from None
    return entry.function(rgb, level, rng)
