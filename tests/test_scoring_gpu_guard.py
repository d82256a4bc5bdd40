"""A job that asked for the GPU fails loudly without ONNX Runtime's CUDA provider; `info` says where it ran.

Real ONNX Runtime (the CPU build the tests install, which has no CUDA provider: exactly the state of
a GPU node whose CUDA libraries did not load) and a real `python -m scoring` subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from scoring_fixtures import gradient_image, save

from scoring.demo_model import build_rect_model
from scoring.engine import REQUIRE_CUDA_ENV, Detector, ModelError

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_rect_model(tmp_path_factory.mktemp("gpu-guard") / "rects.onnx", "yolov5", input_size=256)


def test_the_test_onnxruntime_has_no_cuda() -> None:
    """The premise of the tests below: the installed build cannot give a CUDA session."""
    assert "CUDAExecutionProvider" not in ort.get_available_providers()


def test_a_gpu_job_without_cuda_is_refused(small_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_CUDA_ENV, "1")
    with pytest.raises(ModelError) as caught:
        Detector(small_model)
    msg = str(caught.value)
    assert f"asked for the GPU ({REQUIRE_CUDA_ENV}=1)" in msg and "CUDA provider is not in use" in msg
    assert "CPUExecutionProvider" in msg and "refusing to score on the CPU" in msg


def test_without_the_flag_the_cpu_is_fine(small_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_CUDA_ENV, raising=False)
    assert Detector(small_model).providers == ["CPUExecutionProvider"]
    monkeypatch.setenv(REQUIRE_CUDA_ENV, "0")
    assert Detector(small_model).providers == ["CPUExecutionProvider"]


def _score(small_model: Path, tmp_path: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    images = tmp_path / "images"
    save(gradient_image(320, 240, seed=3), images / "a.jpg")
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_CUDA_ENV} | env_extra
    return subprocess.run(
        [sys.executable, "-m", "scoring", "--model", str(small_model), "--input", str(images),
         "--output", str(tmp_path / "out.json"), "--progress-every", "0", "-q"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_the_scorer_exits_with_the_reason(small_model: Path, tmp_path: Path) -> None:
    proc = _score(small_model, tmp_path, {REQUIRE_CUDA_ENV: "1"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: this job asked for the GPU") and "CUDA provider" in proc.stderr
    assert not (tmp_path / "out.json").exists()


def test_results_info_records_the_execution_provider(small_model: Path, tmp_path: Path) -> None:
    proc = _score(small_model, tmp_path, {})
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "out.json").read_text())
    assert results["info"]["execution_provider"] == "CPUExecutionProvider"
    assert results["info"]["format_version"] == "1.6"
    assert [img["file"] for img in results["images"]] == ["a.jpg"]
