"""Decode and letterbox images exactly like MegaDetector's "classic" mode.

Decode with Pillow (same library MegaDetector uses, so same pixels), apply the
EXIF orientation, convert to 8-bit RGB, then YOLOv5's ``letterbox`` with
``auto=True``: scale the long side to the input size (bilinear, OpenCV),
pad to the next stride multiple with 114, split evenly on both sides.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from . import jpeg

# Larger than any camera-trap sensor (~100 MP); beyond it an image is a decompression bomb.
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = None  # we check the limit ourselves, on the header, before decoding
ImageFile.LOAD_TRUNCATED_IMAGES = False

# EXIF orientation -> Pillow transpose ops, the way MegaDetector's open_image applies them: the
# rotations 3/6/8 only (it skips mirrored orientations), read through ``Image._getexif`` (so
# formats without it, e.g. TIFF, are not rotated). Its boxes, and the tools that draw them,
# refer to the pixels so oriented; ours must too.
_ORIENT = {
    3: (Image.Transpose.ROTATE_180,),
    6: (Image.Transpose.ROTATE_270,),
    8: (Image.Transpose.ROTATE_90,),
}


class ImageError(Exception):
    """An image that cannot be scored; its message becomes the ``failure`` string."""


@dataclass(frozen=True)
class Letterboxed:
    """A model-ready image: CHW float32 in 0..1, plus what box scaling needs."""

    tensor: np.ndarray  # [3, H, W] float32
    orig_hw: tuple[int, int]  # (height, width) after EXIF orientation

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.tensor.shape[1]), int(self.tensor.shape[2]))


def _to_rgb8(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; 16/32-bit greyscale is scaled, not clipped."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im.convert("I") if mode != "I" else im, dtype=np.int64)
        hi = 65535 if arr.max(initial=0) > 255 or mode.startswith("I;16") else 255
        arr8 = (np.clip(arr, 0, hi) * 255 // hi).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "F":
        raise ImageError("image access failure: unsupported image mode F (floating point)")
    if mode in ("P", "PA") and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")  # L, LA, P, RGBA, CMYK, YCbCr, LAB, HSV, 1


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Bytes -> HxWx3 uint8 RGB, EXIF-oriented. Raises :class:`ImageError` with a short reason."""
    if not data:
        raise ImageError("image access failure: empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("image access failure: not a recognised image format") from None
    except Exception as e:  # Pillow raises many kinds on corrupt headers
        raise ImageError(f"image access failure: {type(e).__name__}: {e}") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError("image access failure: zero-sized image")
    if w * h > max_pixels:
        raise ImageError(f"image access failure: decompression bomb ({w}x{h} > {max_pixels} pixels)")
    try:
        getexif = getattr(im, "_getexif", None)  # what MegaDetector reads (JPEG, PNG, WebP, MPO)
        exif = getexif() if getexif is not None else None
        orientation = exif.get(274, 1) if exif else 1
    except Exception:
        orientation = 1
    if im.format == "JPEG" and im.mode == "RGB":  # issue 13: same pixels, about twice as fast
        fast = jpeg.decode_rgb(data, orientation)
        if fast is not None:
            return fast
    try:
        im.load()
        im = _to_rgb8(im)
        for op in _ORIENT.get(orientation, ()):
            im = im.transpose(op)
        arr = np.asarray(im)
    except ImageError:
        raise
    except Exception as e:
        msg = str(e) or type(e).__name__
        raise ImageError(f"image access failure: {msg}") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ImageError(f"image access failure: unexpected pixel layout {arr.shape} {arr.dtype}")
    return arr


def letterbox_geometry(h: int, w: int, input_size: int, stride: int
                       ) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """(new_w, new_h), (top, bottom, left, right) exactly as YOLOv5's letterbox(auto=True, scaleup=True)."""
    r = min(input_size / h, input_size / w)
    new_w, new_h = round(w * r), round(h * r)
    dw = float(np.mod(input_size - new_w, stride)) / 2
    dh = float(np.mod(input_size - new_h, stride)) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return (new_w, new_h), (top, bottom, left, right)


def letterbox(img: np.ndarray, input_size: int = 1280, stride: int = 64, pad_value: int = 114,
              alloc: Callable[[tuple[int, ...]], np.ndarray] | None = None) -> Letterboxed:
    """HxWx3 uint8 RGB -> :class:`Letterboxed` (one float32 CHW buffer, no extra copies).

    ``alloc(shape)`` may hand in a reused buffer (scoring.buffers); every element is written.
    """
    h, w = img.shape[:2]
    (new_w, new_h), (top, bottom, left, right) = letterbox_geometry(h, w, input_size, stride)
    if (w, h) != (new_w, new_h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    shape = (3, new_h + top + bottom, new_w + left + right)
    out = alloc(shape) if alloc is not None else np.empty(shape, dtype=np.float32)
    pad = np.float32(pad_value) / np.float32(255.0)
    # the padding strips only (a reused buffer holds the previous image elsewhere)
    out[:, :top, :] = pad
    out[:, top + new_h:, :] = pad
    out[:, top:top + new_h, :left] = pad
    out[:, top:top + new_h, left + new_w:] = pad
    # HWC uint8 -> CHW float32 / 255 into the padded buffer (same float32 maths as torch's /= 255)
    view = out[:, top:top + new_h, left:left + new_w]
    np.divide(img.transpose(2, 0, 1), np.float32(255.0), out=view, dtype=np.float32)
    return Letterboxed(tensor=out, orig_hw=(h, w))
