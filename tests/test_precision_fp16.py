"""fp16 variants: converted with fp16 weights, fp32 inputs/outputs, and boxes within 2 px / 0.01
conf of fp32 on the shared camera-trap photos (ONNX Runtime's CPU provider runs fp16 models)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from scoring.demo_model import build_random_yolo
from scoring.engine import Detector, ModelError, RunConfig, run
from scoring.images import decode_image
from scoring.parity import compare, detections_by_file
from scoring.precision import PrecisionError, convert_to_fp16, fp16_path, model_for_precision
from tests.conftest import CAMERA_TRAP_DIR, REPO_ROOT

PX_TOL, CONF_TOL = 2.0, 0.01


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fp16-models")
    return build_random_yolo(d / "yolo640.onnx", "yolov5", input_size=640, stride=32, width=16)


@pytest.fixture(scope="module")
def photo_sizes() -> dict[str, tuple[int, int]]:
    sizes = {}
    for p in sorted(CAMERA_TRAP_DIR.iterdir()):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
            a = decode_image(p.read_bytes())
            sizes[p.name] = (a.shape[1], a.shape[0])
    assert len(sizes) >= 10, f"shared photos missing from {CAMERA_TRAP_DIR}"
    return sizes


def test_variant_has_fp16_weights_and_fp32_io(fp32_model: Path) -> None:
    half = convert_to_fp16(fp32_model)
    assert half == fp16_path(fp32_model) and half.name == "yolo640.fp16.onnx"
    m = onnx.load(str(half))
    kinds = [t.data_type for t in m.graph.initializer if t.name.startswith("w")]
    assert kinds.count(onnx.TensorProto.FLOAT16) >= 4  # the backbone convolutions
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    manifest = json.loads(Path(str(half) + ".json").read_text())
    assert manifest["precision"] == "fp16" and manifest["input_size"] == 640
    assert half.stat().st_size < fp32_model.stat().st_size * 0.8
    # the fp16 graph really runs in fp16: raw outputs close to fp32 but not bit-identical
    x = np.random.default_rng(0).random((1, 3, 480, 640), dtype=np.float32)
    a = ort.InferenceSession(str(fp32_model), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    b = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert b.dtype == np.float32 and a.shape == b.shape
    assert not np.array_equal(a, b)
    assert float(np.abs(a[..., 4:] - b[..., 4:]).max()) < CONF_TOL


def test_fp16_boxes_within_tolerance_on_shared_photos(tmp_path: Path, fp32_model: Path,
                                                       photo_sizes: dict[str, tuple[int, int]]) -> None:
    outs = {}
    for prec in ("fp32", "fp16"):
        out = tmp_path / f"{prec}.json"
        stats = run(RunConfig(model=fp32_model, input=str(CAMERA_TRAP_DIR), output=str(out), precision=prec,
                              checkpoint_every=0, progress_every=0))
        assert stats.scored == len(photo_sizes) and stats.failed == 0
        outs[prec] = detections_by_file(json.loads(out.read_text()))
    n = sum(len(v or []) for v in outs["fp32"].values())
    assert n >= 3 * len(photo_sizes), "too few boxes to judge"
    p = compare(outs["fp32"], outs["fp16"], photo_sizes, conf_tol=CONF_TOL)
    assert p.images == len(photo_sizes) and p.boxes == n
    assert p.within(PX_TOL, CONF_TOL), p.to_json()


def test_comparison_rejects_a_shift_beyond_tolerance(photo_sizes: dict[str, tuple[int, int]]) -> None:
    """The tolerance check can fail: a box moved 3 px, or a conf off by 0.02, is reported."""
    name = next(iter(photo_sizes))
    w, _ = photo_sizes[name]
    ref = {name: [{"category": "1", "conf": 0.5, "bbox": [0.2, 0.2, 0.3, 0.3]}]}
    moved = {name: [{"category": "1", "conf": 0.5, "bbox": [0.2 + 3.0 / w, 0.2, 0.3, 0.3]}]}
    unsure = {name: [{"category": "1", "conf": 0.52, "bbox": [0.2, 0.2, 0.3, 0.3]}]}
    assert not compare(ref, moved, photo_sizes).within(PX_TOL, CONF_TOL)
    assert not compare(ref, unsure, photo_sizes, conf_tol=0.05).within(PX_TOL, CONF_TOL)
    assert not compare(ref, {name: []}, photo_sizes).within(PX_TOL, CONF_TOL)
    assert compare(ref, ref, photo_sizes).within(0.0, 0.0)


def test_model_for_precision_reuses_and_refuses(tmp_path: Path, fp32_model: Path) -> None:
    assert model_for_precision(fp32_model, "fp32") == fp32_model
    half = model_for_precision(fp32_model, "fp16")
    mtime = half.stat().st_mtime_ns
    assert model_for_precision(fp32_model, "fp16") == half and half.stat().st_mtime_ns == mtime
    assert model_for_precision(half, "fp16") == half
    with pytest.raises(PrecisionError, match="precision must be one of fp32, fp16"):
        model_for_precision(fp32_model, "int4")
    with pytest.raises(PrecisionError, match="already is an fp16 variant"):
        convert_to_fp16(half)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(PrecisionError, match="cannot read ONNX model"):
        convert_to_fp16(bad)
    with pytest.raises(ModelError, match="precision must be one of"):
        Detector(fp32_model, precision="fp8")


def test_cli_precision_fp16(tmp_path: Path, fp32_model: Path) -> None:
    out = tmp_path / "cli.json"
    photo = tmp_path / "in"
    photo.mkdir()
    (photo / "pheasant_web.jpg").write_bytes((CAMERA_TRAP_DIR / "pheasant_web.jpg").read_bytes())
    r = subprocess.run([sys.executable, "-m", "scoring", "--model", str(fp32_model), "--input", str(photo),
                        "--output", str(out), "--precision", "fp16", "--provider", "cpu", "-q"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["images"][0]["detections"]
    assert data["info"]["execution_provider"] == "CPUExecutionProvider"
    r = subprocess.run([sys.executable, "-m", "scoring", "--model", str(fp32_model), "--input",
                        str(CAMERA_TRAP_DIR), "--output", str(out), "--precision", "fp64"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--precision" in r.stderr
