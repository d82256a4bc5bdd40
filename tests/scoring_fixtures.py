"""Fixtures and helpers for the scoring tests (models built at test time, images drawn here)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scoring.demo_model import build_random_yolo, build_rect_model

CLEAN_PHOTOS = ["channel-islands-thumb.jpg", "idaho-camera-traps.jpg", "pheasant_web.jpg",
                "sample-arc-01.jpg", "sample-cfz-01.jpg", "sample-dzf-01.jpg"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scoring-models")


@pytest.fixture(scope="session")
def rect_model(model_dir: Path) -> Path:
    return build_rect_model(model_dir / "rects.onnx", "yolov5")


@pytest.fixture(scope="session")
def rect_model_ultra(model_dir: Path) -> Path:
    return build_rect_model(model_dir / "rects-ultra.onnx", "ultralytics")


@pytest.fixture(scope="session")
def random_models(model_dir: Path) -> dict[str, Path]:
    return {lay: build_random_yolo(model_dir / f"random-{lay}.onnx", lay, input_size=256, stride=32)
            for lay in ("yolov5", "ultralytics")}


def gradient_image(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth unsaturated RGB background (grey-ish gradients plus mild noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 60 + 120 * (xx / max(w - 1, 1)) * 0.5 + 120 * (yy / max(h - 1, 1)) * 0.5
    img = np.stack([base, base * 0.95 + 5, base * 0.9 + 10], axis=2)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def save(img: np.ndarray | Image.Image, path: Path, **kw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img) if isinstance(img, np.ndarray) else img
    if path.suffix.lower() in (".jpg", ".jpeg"):
        kw.setdefault("quality", 100)
        kw.setdefault("subsampling", 0)  # 4:4:4: no chroma blur on the rectangle edges
    elif path.suffix.lower() == ".png":
        kw.setdefault("compress_level", 1)
    im.save(path, **kw)
    return path


def load_results(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    return data


def by_file(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["file"]: e for e in results["images"]}


def jpeg_bytes(img: np.ndarray, **kw: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def assert_box(actual: list[float], expected: list[float], tol: float) -> None:
    diffs = [abs(a - e) for a, e in zip(actual, expected, strict=True)]
    assert max(diffs) <= tol, f"box {actual} != expected {expected} (tol {tol:.5f}, diffs {diffs})"


def plant_boxes(dest: Path, camera_trap_dir: Path, boxes: dict[str, tuple[float, float, float, float]],
                n: int = 3) -> Path:
    """The first ``n`` clean shared photos as PNGs in ``dest``, each with the rectangle model's
    colour for every category painted at its box (normalised x, y, w, h)."""
    from scoring.demo_model import draw_rect

    for name in CLEAN_PHOTOS[:n]:
        img = np.asarray(Image.open(camera_trap_dir / name).convert("RGB")).copy()
        for cat, box in boxes.items():
            draw_rect(img, cat, box)
        save(img, dest / f"{Path(name).stem}.png")
    return dest
