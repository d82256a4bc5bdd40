"""Every kind of awkward image: converted and scored, or a ``failure`` entry; the shard never fails.

Decision (documented in docs/notes/issue-2.md): greyscale, greyscale+alpha, palette, RGBA, CMYK and
16-bit images are converted to 8-bit RGB (16-bit scaled, not clipped) and scored; empty, non-image,
truncated, decompression-bomb and floating-point images are failures.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from scoring.demo_model import draw_rect
from scoring.engine import RunConfig, run
from tests.scoring_fixtures import (  # noqa: F401
    by_file,
    gradient_image,
    load_results,
    model_dir,
    rect_model,
    save,
)

RED_BOX = (0.2, 0.3, 0.4, 0.3)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels (a decompression bomb's header) with a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


def test_bad_and_odd_images(tmp_path: Path, rect_model: Path) -> None:  # noqa: F811
    d = tmp_path / "in"
    d.mkdir()
    base = gradient_image(320, 240, seed=5)
    red = base.copy()
    draw_rect(red, "1", RED_BOX)
    good = save(red, d / "good.jpg")
    data = good.read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is not an image\n")
    (d / "bomb.png").write_bytes(_png_header_only(20000, 20000))
    garbage = bytearray(data)
    garbage[200:] = bytes(len(garbage) - 200)
    (d / "garbage-body.jpg").write_bytes(bytes(garbage))
    # converted and scored
    Image.fromarray(red).convert("CMYK").save(d / "cmyk.jpg", quality=100)
    Image.fromarray(red).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(d / "palette.png")
    rgba = np.dstack([red, np.full(red.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "alpha.png")
    Image.fromarray(base).convert("L").save(d / "gray.jpg", quality=95)
    Image.fromarray(base).convert("LA").save(d / "gray-alpha.png")
    g16 = (gradient_image(320, 240)[..., 0].astype(np.uint16) * 257)
    cv2.imwrite(str(d / "gray16.png"), g16)
    rgb16 = red.astype(np.uint16) * 257
    cv2.imwrite(str(d / "rgb16.png"), rgb16[..., ::-1].copy())  # OpenCV writes BGR
    Image.fromarray(np.full((40, 60), 0.5, np.float32), "F").save(d / "float.tif")

    out = tmp_path / "out.json"
    stats = run(RunConfig(model=rect_model, input=str(d), output=str(out)))
    res = by_file(load_results(out))
    assert len(res) == 14 and stats.total == 14

    failures = {"truncated.jpg", "zero.jpg", "text.jpg", "bomb.png", "garbage-body.jpg", "float.tif"}
    for name in failures:
        e = res[name]
        assert isinstance(e.get("failure"), str) and e["failure"], (name, e)
        assert "detections" not in e, name
    assert "0 bytes" in res["zero.jpg"]["failure"]
    assert "decompression bomb" in res["bomb.png"]["failure"]
    assert "truncated" in res["truncated.jpg"]["failure"]
    assert stats.failed == len(failures)

    for name in ("good.jpg", "cmyk.jpg", "palette.png", "alpha.png", "rgb16.png"):
        e = res[name]
        assert "failure" not in e, (name, e)
        cats = [x["category"] for x in e["detections"]]
        assert cats == ["1"], (name, e)
        x, y, w, h = e["detections"][0]["bbox"]
        assert abs(x - 0.2) < 0.01 and abs(y - 0.3) < 0.01 and abs(w - 0.4) < 0.01 and abs(h - 0.3) < 0.01
    for name in ("gray.jpg", "gray-alpha.png", "gray16.png"):
        assert res[name] == {"file": name, "detections": []}, res[name]


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    from scoring.images import decode_image

    g16 = np.array([[0, 257 * 100, 65535]], np.uint16)
    p = tmp_path / "g.png"
    cv2.imwrite(str(p), g16)
    arr = decode_image(p.read_bytes())
    assert arr.shape == (1, 3, 3) and arr.dtype == np.uint8
    assert arr[0, :, 0].tolist() == [0, 100, 255]
