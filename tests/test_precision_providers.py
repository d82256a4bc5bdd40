"""Provider lists with tuned options (built and checked here; only the CPU ones can run), IO
binding (same numbers as session.run, on the CPU), and the OpenVINO runtime behind --provider."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from scoring.demo_model import build_random_yolo
from scoring.engine import Detector, ModelError, RunConfig, run
from scoring.providers import (
    CPU,
    CUDA,
    TENSORRT,
    ProviderError,
    session_providers,
    split_specs,
)
from tests.conftest import CAMERA_TRAP_DIR

GPU_BUILD = [TENSORRT, CUDA, CPU]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_yolo(tmp_path_factory.mktemp("prov") / "m.onnx", "yolov5", input_size=320, stride=32)


def test_auto_and_cuda_use_tuned_cuda_options() -> None:
    names, opts = split_specs(session_providers("auto", [CUDA, CPU]))
    assert names == [CUDA, CPU]
    assert opts[0]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert opts[0]["cudnn_conv_use_max_workspace"] == "1"
    assert opts[0]["do_copy_in_default_stream"] == "1"
    assert opts[0]["arena_extend_strategy"] == "kSameAsRequested"
    assert opts[1] == {}
    assert split_specs(session_providers("cuda", GPU_BUILD))[0] == [CUDA, CPU]
    assert session_providers("auto", [CPU]) == [CPU]
    assert session_providers(None, [CPU]) == [CPU]


def test_tensorrt_profile_cache_and_precision(tmp_path: Path) -> None:
    for prec in ("fp32", "fp16"):
        names, opts = split_specs(session_providers("tensorrt", GPU_BUILD, prec, input_size=1280,
                                                    max_batch=16, cache_dir=tmp_path / "trt"))
        assert names == [TENSORRT, CUDA, CPU]
        trt = opts[0]
        assert trt["trt_fp16_enable"] is (prec == "fp16")
        assert trt["trt_engine_cache_enable"] is True
        assert trt["trt_engine_cache_path"] == str(tmp_path / "trt")
        assert trt["trt_profile_max_shapes"] == "images:16x3x1280x1280"
        assert trt["trt_profile_opt_shapes"] == "images:8x3x960x1280"
        assert opts[1]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert (tmp_path / "trt").is_dir()


def test_missing_or_unknown_providers_are_refused() -> None:
    with pytest.raises(ProviderError, match="cuda asked for but ONNX Runtime has only CPUExecutionProvider"):
        session_providers("cuda", [CPU])
    with pytest.raises(ProviderError, match="provider tensorrt asked for"):
        session_providers("tensorrt", [CUDA, CPU])
    with pytest.raises(ProviderError, match="unknown provider 'rocm'"):
        session_providers("rocm", [CPU])


def test_detector_refuses_a_provider_this_build_lacks(model: Path) -> None:
    if CUDA in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA")  # the machines this runs on have the CPU build
    with pytest.raises(ModelError, match="provider cuda asked for"):
        Detector(model, provider="cuda")
    det = Detector(model, provider="cpu")
    assert det.providers == [CPU] and not det.on_gpu


def test_io_binding_matches_session_run(model: Path) -> None:
    det = Detector(model, provider="cpu")
    x = np.random.default_rng(1).random((2, 3, 320, 256), dtype=np.float32)
    assert np.array_equal(det._infer_bound(x, device="cpu"), det.session.run(None, {det.input_name: x})[0])


def test_openvino_provider_matches_onnxruntime(tmp_path: Path, model: Path) -> None:
    outs = {}
    for prov in ("cpu", "openvino"):
        out = tmp_path / f"{prov}.json"
        stats = run(RunConfig(model=model, input=str(CAMERA_TRAP_DIR), output=str(out), provider=prov,
                              checkpoint_every=0, progress_every=0))
        assert stats.failed == 0 and stats.scored >= 10
        outs[prov] = json.loads(out.read_text())
    assert outs["openvino"]["info"]["execution_provider"] == "OpenVINO-CPU"
    a, b = outs["cpu"]["images"], outs["openvino"]["images"]
    assert [e["file"] for e in a] == [e["file"] for e in b]
    n = 0
    for ea, eb in zip(a, b, strict=True):
        assert len(ea["detections"]) == len(eb["detections"]), ea["file"]
        for da, db in zip(ea["detections"], eb["detections"], strict=True):
            n += 1
            assert da["category"] == db["category"]
            assert abs(da["conf"] - db["conf"]) <= 0.001
            assert max(abs(p - q) for p, q in zip(da["bbox"], db["bbox"], strict=True)) <= 0.0011
    assert n > 0
