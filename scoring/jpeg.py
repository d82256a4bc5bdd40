"""Faster JPEG decoding with MegaDetector's pixels: libjpeg-turbo called through simplejpeg.

Why: Pillow decodes JPEGs with libjpeg-turbo too, but feeds the decoder from Python in 64 KB
blocks and copies the image into a numpy array afterwards; calling libjpeg-turbo in one go with
the same settings Pillow uses (accurate integer IDCT, "fancy" chroma upsampling, i.e.
``fastdct=False, fastupsample=False``) gives the same bytes about twice as fast (measured in
docs/notes/issue-13.md; equality is tested on the shared photos and on generated subsamplings,
progressive and EXIF-rotated files). Pillow's ``draft()`` (DCT-domain downscaling) is faster
still but changes the pixels, so it is not used.

``strict=True`` makes libjpeg-turbo's recoverable errors (a truncated or corrupt body) raise, and
any failure returns None so the caller falls back to Pillow, which then reports the image as it
always did.
"""

from __future__ import annotations

import numpy as np

try:  # optional: without it every image takes the Pillow path
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - pinned in requirements.txt
    _simplejpeg = None

# EXIF orientation -> np.rot90 turns (counter-clockwise), the same turns as Pillow's transpose
# ops MegaDetector applies (3: ROTATE_180, 6: ROTATE_270, 8: ROTATE_90).
ROT90 = {3: 2, 6: 3, 8: 1}


def available() -> bool:
    return _simplejpeg is not None


def decode_rgb(data: bytes, orientation: int = 1) -> np.ndarray | None:
    """A colour JPEG -> HxWx3 uint8 RGB, rotated for ``orientation``; None to use Pillow instead."""
    if _simplejpeg is None:
        return None
    try:
        arr = _simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False, strict=True)
    except Exception:  # corrupt, truncated, CMYK, 12-bit...: Pillow decides and reports
        return None
    k = ROT90.get(orientation, 0)
    return np.ascontiguousarray(np.rot90(arr, k)) if k else arr
