"""Review findings in scoring/: parity with MegaDetector classic, clean errors, names that escape a root."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scoring.engine import Detector, ModelError, RunConfig, run
from scoring.images import decode_image, letterbox_geometry
from scoring.postprocess import to_detections
from tests.conftest import REPO_ROOT
from tests.scoring_fixtures import gradient_image, model_dir, rect_model, save  # noqa: F401

# --- box scaling on the ultralytics path ----------------------------------------------------------

def _ultralytics_scale_boxes(input_hw: tuple[int, int], boxes: np.ndarray, orig_hw: tuple[int, int]
                             ) -> np.ndarray:
    """ultralytics.utils.ops.scale_boxes (ratio_pad=None, padding=True) + clip + round, as
    MegaDetector classic runs it for ultralytics models (its pads are whole pixels, gain per axis)."""
    gain = min(input_hw[0] / orig_hw[0], input_hw[1] / orig_hw[1])
    new_h, new_w = (max(round(x * gain), 1) for x in orig_hw)
    gain_y, gain_x = new_h / orig_hw[0], new_w / orig_hw[1]
    pad_x = round((input_hw[1] - new_w) / 2 - 0.1)
    pad_y = round((input_hw[0] - new_h) / 2 - 0.1)
    b = boxes.astype(np.float32, copy=True)
    b[:, [0, 2]] = (b[:, [0, 2]] - pad_x) / np.float32(gain_x)
    b[:, [1, 3]] = (b[:, [1, 3]] - pad_y) / np.float32(gain_y)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, orig_hw[1])
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, orig_hw[0])
    return np.round(b)


def test_ultralytics_layout_scales_boxes_like_ultralytics() -> None:
    """A 3000x2000 photo letterboxes to 1280x853 + 21/22 rows of padding: MegaDetector (via the
    ultralytics package) takes the pad as 21 whole pixels and the gain as 853/2000, not 21.33 and
    1280/3000; boxes differ by a pixel if we use YOLOv5's formula for ultralytics models."""
    orig_hw = (2000, 3000)
    (new_w, new_h), (top, bottom, left, right) = letterbox_geometry(*orig_hw, 1280, 64)
    input_hw = (new_h + top + bottom, new_w + left + right)
    assert (top, bottom) == (21, 22)
    det = np.array([[100.0, 500.0, 400.0, 700.0, 0.9, 0.0],
                    [33.3, 121.7, 640.2, 852.9, 0.8, 1.0]], np.float32)
    got = to_detections(det, input_hw, orig_hw, 0.005, ["1", "2", "3"], layout="ultralytics")
    ref = _ultralytics_scale_boxes(input_hw, det[:, :4], orig_hw)
    for d, (x1, y1, x2, y2) in zip(got, ref, strict=True):
        want = [x1 / 3000, y1 / 2000, (x2 - x1) / 3000, (y2 - y1) / 2000]
        assert max(abs(a - b) for a, b in zip(d["bbox"], want, strict=True)) < 1.5e-4, (d["bbox"], want)


def test_yolov5_layout_keeps_yolov5_scaling() -> None:
    orig_hw = (2000, 3000)
    det = np.array([[100.0, 500.0, 400.0, 700.0, 0.9, 0.0]], np.float32)
    got = to_detections(det, (896, 1280), orig_hw, 0.005, ["1", "2", "3"])
    gain = 1280 / 3000
    pad_y = (896 - 2000 * gain) / 2
    y1 = round((500 - pad_y) / gain)
    assert abs(got[0]["bbox"][1] - y1 / 2000) < 1.5e-4


# --- detection order: MegaDetector's stable sort on the truncated conf ------------------------------

def test_equal_truncated_conf_keeps_megadetector_order() -> None:
    """MegaDetector walks NMS output in reverse (lowest conf first), then stable-sorts by the
    truncated conf, descending: two boxes at 0.9127 and 0.9121 (both 0.912) come out lower first."""
    det = np.array([[0, 0, 10, 10, 0.9127, 0.0], [50, 50, 60, 60, 0.9121, 0.0],
                    [80, 80, 90, 90, 0.5, 1.0]], np.float32)
    got = to_detections(det, (128, 128), (128, 128), 0.005, ["1", "2", "3"])
    assert [d["conf"] for d in got] == [0.912, 0.912, 0.5]
    xs = [d["bbox"][0] for d in got]
    assert xs == [pytest.approx(50 / 128, abs=1e-4), 0.0, pytest.approx(80 / 128, abs=1e-4)]


# --- EXIF orientation the way MegaDetector applies it ------------------------------------------------

def _pattern() -> np.ndarray:
    img = np.zeros((20, 40, 3), np.uint8)
    img[:5, :10] = (255, 0, 0)  # a red corner: any flip or rotation moves it
    img[15:, 30:] = (0, 0, 255)
    return img


def _encoded(img: np.ndarray, fmt: str, orientation: int) -> bytes:
    ex = Image.Exif()
    ex[274] = orientation
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, exif=ex)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [2, 4, 5, 7])
def test_mirrored_orientations_are_not_applied(orientation: int) -> None:
    """MegaDetector's open_image rotates for 3/6/8 only ('Mirrored rotations are not supported'),
    so its boxes (and its visualisations) refer to the stored pixels of a mirrored-orientation file."""
    img = _pattern()
    got = decode_image(_encoded(img, "PNG", orientation))
    assert got.shape == img.shape
    assert np.array_equal(got, img)


@pytest.mark.parametrize("orientation,turns", [(3, 2), (6, 3), (8, 1)])
def test_rotations_are_applied(orientation: int, turns: int) -> None:
    img = _pattern()
    got = decode_image(_encoded(img, "PNG", orientation))
    assert np.array_equal(got, np.rot90(img, turns))


def test_tiff_orientation_is_applied_once() -> None:
    """Pillow's TIFF decoder applies the Orientation tag itself (and keeps the tag); MegaDetector
    reads the tag through Image._getexif, which TIFF files lack, so it is applied once there.
    Reading it with getexif() and transposing again turned such images twice."""
    img = _pattern()
    got = decode_image(_encoded(img, "TIFF", 6))
    assert np.array_equal(got, np.rot90(img, 3))


# --- clean errors when the model or the output fails ------------------------------------------------

class _FailingDetector(Detector):
    """The real detector that raises on its second inference call (a CUDA/ORT failure mid-shard)."""

    calls = 0

    def infer(self, batch: np.ndarray, session: object = None) -> np.ndarray:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDA failure 700")
        return super().infer(batch, session)


def test_model_raising_mid_batch_is_a_model_error(tmp_path: Path, rect_model: Path) -> None:  # noqa: F811
    for i in range(4):
        save(gradient_image(64, 48, seed=i), tmp_path / "in" / f"{i}.png")
    out = tmp_path / "out" / "r.json"
    det = _FailingDetector(rect_model, threads=1)
    with pytest.raises(ModelError, match="inference failed"):
        run(RunConfig(model=rect_model, input=str(tmp_path / "in"), output=str(out), workers=2,
                      progress_every=0), detector=det)
    assert not out.exists()


def test_output_that_is_a_folder_fails_cleanly(tmp_path: Path, rect_model: Path) -> None:  # noqa: F811
    save(gradient_image(64, 48), tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "scoring", "--model", str(rect_model), "--input", str(tmp_path / "in"),
         "--output", str(out), "--progress-every", "0", "-q"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert not list(tmp_path.glob(".out.*")), "temp file left behind"


# --- shard manifest names may not leave the source folder -------------------------------------------

def test_manifest_names_cannot_leave_the_source_folder(tmp_path: Path, rect_model: Path) -> None:  # noqa: F811
    root = tmp_path / "root"
    save(gradient_image(64, 48), root / "ok.png")
    secret = save(gradient_image(64, 48, seed=3), tmp_path / "private" / "outside.png")
    (root / "link.png").symlink_to(secret)
    manifest = {
        "format": "mdbatch-shard/1", "request_id": "r1", "shard": 0,
        "source": {"url": root.as_uri(), "secret_ref": None},
        "images": ["../private/outside.png", str(secret), "link.png", "ok.png"],
    }
    mpath = tmp_path / "shard.json"
    mpath.write_text(json.dumps(manifest))
    out = tmp_path / "r.json"
    run(RunConfig(model=rect_model, input=str(mpath), output=str(out), workers=1, progress_every=0))
    entries = {e["file"]: e for e in json.loads(out.read_text())["images"]}
    assert "detections" in entries["ok.png"], entries["ok.png"]
    for name in ("../private/outside.png", str(secret), "link.png"):
        assert entries[name].get("failure", "").startswith("image access failure: "), entries[name]
