"""The fast JPEG path (libjpeg-turbo through simplejpeg) gives Pillow's pixels exactly, and the
images it cannot take (truncated, corrupt, CMYK, greyscale) still go through Pillow as before."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from scoring import jpeg
from scoring.images import ImageError, _to_rgb8, decode_image
from tests.conftest import CAMERA_TRAP_DIR
from tests.scoring_fixtures import gradient_image


def test_fast_decoder_is_installed() -> None:
    assert jpeg.available(), "simplejpeg (pinned in requirements-dev.txt and infra/aml/conda.yml) is missing"

ROTATE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}


def pillow_pixels(data: bytes, orientation: int = 1) -> np.ndarray:
    """Pillow alone, the way MegaDetector opens images (decode, RGB, rotations 3/6/8)."""
    im = Image.open(io.BytesIO(data))
    im.load()
    im = _to_rgb8(im)
    if orientation in ROTATE:
        im = im.transpose(ROTATE[orientation])
    return np.asarray(im)


def textured(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = gradient_image(w, h, seed).astype(np.int16) + rng.integers(-50, 50, (h, w, 3))
    img[h // 4: h // 2, w // 5: w // 2] = (200, 30, 40)  # sharp colour edges exercise chroma upsampling
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(img: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def test_shared_photos_identical_to_pillow() -> None:
    n = 0
    for p in sorted(CAMERA_TRAP_DIR.iterdir()):
        if p.suffix.lower() not in (".jpg", ".jpeg"):
            continue
        data = p.read_bytes()
        fast = jpeg.decode_rgb(data)
        assert fast is not None, p.name
        assert np.array_equal(fast, pillow_pixels(data)), p.name
        assert np.array_equal(decode_image(data), pillow_pixels(data, Image.open(p).getexif().get(274, 1)))
        n += 1
    assert n >= 10


@pytest.mark.parametrize("kw", [
    {"quality": 90, "subsampling": 2},  # 4:2:0 (cameras)
    {"quality": 75, "subsampling": 1},  # 4:2:2
    {"quality": 100, "subsampling": 0},  # 4:4:4
    {"quality": 85, "progressive": True, "optimize": True},
])
def test_generated_jpegs_identical(kw: dict[str, object]) -> None:
    for seed, (w, h) in enumerate([(641, 479), (1280, 720), (333, 1001)]):
        data = encode(textured(w, h, seed), **kw)
        fast = jpeg.decode_rgb(data)
        assert fast is not None and fast.shape == (h, w, 3)
        assert np.array_equal(fast, pillow_pixels(data)), (kw, w, h)


@pytest.mark.parametrize("orientation", [1, 2, 3, 6, 8])
def test_exif_orientation_same_as_pillow(orientation: int) -> None:
    exif = Image.Exif()
    exif[274] = orientation
    data = encode(textured(320, 200, 5), quality=92, exif=exif.tobytes())
    out = decode_image(data)
    assert np.array_equal(out, pillow_pixels(data, orientation))
    assert out.shape == ((320, 200, 3) if orientation in (6, 8) else (200, 320, 3))
    assert out.flags["C_CONTIGUOUS"]


def test_fallbacks_keep_pillow_behaviour() -> None:
    data = encode(textured(400, 300, 1), quality=90)
    assert jpeg.decode_rgb(data[: len(data) // 2]) is None  # truncated: strict mode refuses
    with pytest.raises(ImageError, match="truncated"):
        decode_image(data[: len(data) // 2])
    grey = encode(textured(300, 200, 2)[:, :, 0])
    out = decode_image(grey)  # mode L: Pillow path, grey replicated to RGB
    assert out.shape == (200, 300, 3) and np.array_equal(out[:, :, 0], out[:, :, 2])
    cmyk = io.BytesIO()
    Image.fromarray(textured(300, 200, 3)).convert("CMYK").save(cmyk, format="JPEG")
    assert decode_image(cmyk.getvalue()).shape == (200, 300, 3)


def test_letterbox_into_a_reused_buffer_is_identical() -> None:
    """A buffer that held another image (and garbage) gives the same tensor as a fresh one."""
    from scoring.buffers import BufferPool
    from scoring.images import letterbox

    pool = BufferPool()
    for seed, (w, h) in enumerate([(640, 480), (1999, 1500), (480, 640), (800, 450), (800, 450)]):
        img = textured(w, h, seed)
        fresh = letterbox(img).tensor
        dirty = pool.take(fresh.shape)
        dirty.fill(np.nan)
        pool.give(dirty)
        reused = letterbox(img, alloc=pool.take).tensor
        assert reused is dirty and np.array_equal(fresh, reused), (w, h)
        pool.give(reused)
    assert pool.reused >= 5
    view = np.zeros((2, 3, 4, 4), np.float32)[0]
    pool.give(view)  # a view is not recycled
    assert pool.take((3, 4, 4)) is not view
