"""Crop a detection out of the decoded image the way the classifier was trained to see it.

Why here: the shard job already holds the decoded, EXIF-oriented RGB image, so a crop costs a
slice and a resize instead of a second fetch and decode.

Crop rules (``crop`` in the classifier manifest):

``speciesnet``: SpeciesNet's "always crop" preprocessing (``SpeciesNetClassifier.preprocess``,
speciesnet 5.x): the image as float32 in 0..1; the box ``[x, y, w, h]`` turned into whole pixels
by truncation, each of top, left, height and width on its own (``int(y * H)``, ``int(x * W)``,
``int(h * H)``, ``int(w * W)``); parts outside the image read as 0 (torchvision's ``crop``);
stretched to ``input_size`` x ``input_size`` with bilinear interpolation without antialiasing
(half-pixel centres, as torch's ``interpolate(align_corners=False)`` and OpenCV's
``INTER_LINEAR``); back to 8 bits with torchvision's ``convert_image_dtype`` rule
(``trunc(x * (256 - 1e-3))``). The model then sees ``uint8 / divide`` (255; computed in float64
and cast to float32, as SpeciesNet's ``arr / 255.0``), normalised by ``mean``/``std``, in
``nhwc`` or ``nchw`` layout.

``square``: the same, but the box is first grown to a square around its centre (clipped to
the image), for classifiers trained on square crops (e.g. MegaClassifier-style models).
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_RULES = ("speciesnet", "square")
_TO_U8 = np.float32(255.0 + 1.0 - 1e-3)  # torchvision convert_image_dtype(float -> uint8)


def crop_pixels(bbox: list[float], width: int, height: int, rule: str = "speciesnet"
                ) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) in whole pixels for a normalized ``[x, y, w, h]``."""
    x, y, w, h = (float(v) for v in bbox)
    if rule == "square":
        cx, cy = (x + w / 2) * width, (y + h / 2) * height
        side = max(w * width, h * height)
        x0 = max(0.0, min(cx - side / 2, width - side))
        y0 = max(0.0, min(cy - side / 2, height - side))
        x, y = x0 / width, y0 / height
        w, h = min(side, width) / width, min(side, height) / height
    elif rule != "speciesnet":
        raise ValueError(f"crop rule must be one of {CROP_RULES}, got {rule!r}")
    return int(y * height), int(x * width), int(h * height), int(w * width)


def crop_u8(img: np.ndarray, bbox: list[float], size: int, rule: str = "speciesnet"
            ) -> np.ndarray | None:
    """HxWx3 uint8 RGB -> ``size`` x ``size`` x 3 uint8 crop, or None for a box under one pixel."""
    H, W = img.shape[:2]
    top, left, ch, cw = crop_pixels(bbox, W, H, rule)
    if ch <= 0 or cw <= 0:
        return None
    # the part inside the image, zero-padded where the box leaves it (torchvision's crop)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + ch, H), min(left + cw, W)
    region = np.zeros((ch, cw, 3), dtype=np.float32)
    if y1 > y0 and x1 > x0:
        np.divide(img[y0:y1, x0:x1], np.float32(255.0),
                  out=region[y0 - top:y1 - top, x0 - left:x1 - left], dtype=np.float32)
    if (ch, cw) != (size, size):
        region = cv2.resize(region, (size, size), interpolation=cv2.INTER_LINEAR)
    out = region * _TO_U8
    return out.astype(np.uint8)  # truncation, like torch's .to(uint8) on non-negative values


def to_input(crops: list[np.ndarray], layout: str, divide: float,
             mean: tuple[float, float, float], std: tuple[float, float, float]) -> np.ndarray:
    """uint8 crops [N x (S,S,3)] -> the model's float32 batch (NHWC or NCHW)."""
    batch = (np.stack(crops) / float(divide)).astype(np.float32)
    if any(m != 0.0 for m in mean) or any(s != 1.0 for s in std):
        batch -= np.asarray(mean, np.float32)
        batch /= np.asarray(std, np.float32)
    if layout == "nchw":
        batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    return batch
