"""Reading photos and masks from disk, checking image arrays, and writing PNGs atomically.

Every reading failure (missing file, not an image, truncated or corrupt data, an image too large
to decode safely) becomes an :class:`ImageLoadError` whose message is one line naming the file.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from models.classes import MASK_COLOURS
from models.errors import one_line
from models.files import atomic_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Larger images are refused before decoding (about 450 MB of RGB pixels). Pillow's own guard
# (a warning above its MAX_IMAGE_PIXELS, 89 MP by default, an error above twice that) still
# applies and its error is reported the same way.
MAX_PIXELS = 150_000_000

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageLoadError(ValueError):
    """An image or mask that cannot be read; ``str(error)`` is one line naming the file."""


def _check_regular_file(path: Path) -> None:
    """Refuse what reading would block on or misread: pipes, sockets, devices, folders."""
    mode = path.stat().st_mode  # follows links; a dangling one is FileNotFoundError
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(mode):
        raise ImageLoadError(f"{path.name}: not a regular file (a pipe, socket or device), not opened")


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path`` with EXIF orientation applied, or raise ImageLoadError."""
    try:
        _check_regular_file(path)
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageLoadError(
                    f"{path.name}: image too large ({width}x{height}, limit {MAX_PIXELS // 1_000_000} MP)"
                )
            image.load()
            return ImageOps.exif_transpose(image)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError:
        raise ImageLoadError(f"{path.name}: image too large to decode safely") from None
    except (FileNotFoundError, NotADirectoryError):
        raise ImageLoadError(f"{path.name}: file not found ({path})") from None
    except IsADirectoryError:
        raise ImageLoadError(f"{path.name}: is a folder, not an image") from None
    except PermissionError:
        raise ImageLoadError(f"{path.name}: permission denied") from None
    except Image.UnidentifiedImageError:
        raise ImageLoadError(f"{path.name}: not an image, or an unsupported format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageLoadError(f"{path.name}: truncated or corrupt image ({one_line(error)})") from None


def _sixteen_bit_to_gray(image: Image.Image) -> np.ndarray:
    """Scale a 16-bit (or 32-bit integer) grayscale image to 8 bits by the full 0..65535 range."""
    values = np.asarray(image).astype(np.float32)
    return np.round(np.clip(values, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)


def load_rgb(path: str | Path) -> np.ndarray:
    """Read a photo as an HxWx3 uint8 RGB array, upright according to its EXIF orientation.

    Grayscale, palette, CMYK and 16-bit images are converted to RGB; 16-bit values are scaled by
    the full 16-bit range (65535 becomes 255). Transparent images (RGBA, LA, palette or grayscale
    with a transparent colour) are composited over white, as an image viewer shows them.
    """
    path = Path(path)
    image = _open(path)
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = _sixteen_bit_to_gray(image)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _colours_to_indices(rgb: np.ndarray, name: str) -> np.ndarray:
    """Map an RGB mask to class indices through MASK_COLOURS; unknown colours are an error."""
    if (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all():
        return np.ascontiguousarray(rgb[:, :, 0])  # gray RGB: the value is the index (black 0, white 255)
    codes = (rgb[:, :, 0].astype(np.int32) << 16) | (rgb[:, :, 1].astype(np.int32) << 8) | rgb[:, :, 2]
    mask = np.zeros(codes.shape, dtype=np.uint8)
    known = np.zeros(codes.shape, dtype=bool)
    for index, (r, g, b) in MASK_COLOURS.items():
        hit = codes == ((r << 16) | (g << 8) | b)
        mask[hit] = index
        known |= hit
    if not known.all():
        y, x = np.argwhere(~known)[0]
        raise ImageLoadError(
            f"{name}: mask colour {tuple(int(c) for c in rgb[y, x])} at ({x}, {y}) is not a class colour "
            f"(black, (128,0,0) cat, (0,128,0) dog, white void)"
        )
    return mask


def load_mask(path: str | Path) -> np.ndarray:
    """Read a label mask as an HxW uint8 array of class indices.

    Palette and single-channel masks give their stored indices directly (an alpha channel is
    dropped); RGB masks are mapped by colour (black 0, (128,0,0) 1, (0,128,0) 2, white 255).
    """
    path = Path(path)
    image = _open(path)
    if image.mode in ("P", "L"):
        return np.array(image, dtype=np.uint8)
    if image.mode in ("PA", "LA"):
        return np.ascontiguousarray(np.array(image)[:, :, 0])
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "1":
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.max() > 255 or values.min() < 0):
            raise ImageLoadError(f"{path.name}: mask values outside 0..255 (max {values.max()})")
        return values.astype(np.uint8)
    return _colours_to_indices(np.array(image.convert("RGB")), path.name)


def save_png_atomic(
    path: str | Path,
    array: np.ndarray,
    palette: Sequence[int] | None = None,
    text: dict[str, str] | None = None,
) -> Path:
    """Write an HxW, HxWx3 or HxWx4 uint8 array as a PNG via a temp file in the same folder.

    The temp file replaces ``path`` only once fully written and is removed on any failure
    (including KeyboardInterrupt), so ``path`` is never left half-written. With ``palette``
    (768 values, e.g. MASK_PALETTE) an HxW array is saved as a palette PNG of the same indices.
    ``text`` is stored as PNG text chunks (before the image data, so ``Image.open`` reads them).
    """
    path = Path(path)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"{path.name}: expected an HxW, HxWx3 or HxWx4 uint8 array, got {array.dtype} {array.shape}")
    if palette is not None and array.ndim != 2:
        raise ValueError(f"{path.name}: a palette needs an HxW index array")
    image = Image.fromarray(np.ascontiguousarray(array))
    if palette is not None:
        image.putpalette(list(palette))  # an "L" image becomes "P" with the same indices
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path


def check_image(rgb: Any) -> np.ndarray:
    """Return ``rgb`` if it is an HxWx3 uint8 array; raise ValueError saying what is wrong otherwise."""
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"image must be an HxWx3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
    return rgb
