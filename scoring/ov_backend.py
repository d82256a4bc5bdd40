"""OpenVINO's runtime behind the few ONNX Runtime session calls the engine makes.

Why: OpenVINO is the other CPU inference runtime on PyPI (``openvino``), so ``--provider
openvino`` lets a CPU node use it when it measures faster there (docs/notes/issue-13.md has the
measurement on this project's machine: level with ONNX Runtime, so it is not the default).
fp32 is forced (``INFERENCE_PRECISION_HINT=f32``): on CPUs with bf16/AMX OpenVINO would
otherwise compute in bf16 and lose parity with MegaDetector. One compiled model per input shape
(a shard has a handful of letterbox shapes; static shapes compile in well under a second and run
faster than one dynamic-shape model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class _Arg:
    name: str
    shape: list[Any]


@dataclass(frozen=True)
class _Meta:
    custom_metadata_map: dict[str, str]


class OpenVINOSession:
    """``run`` / ``get_inputs`` / ``get_outputs`` / ``get_modelmeta`` / ``get_providers`` like an
    ``onnxruntime.InferenceSession``, backed by OpenVINO on the CPU."""

    def __init__(self, model_path: Path, threads: int) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise RuntimeError("the openvino provider needs the openvino package "
                               "(pip install -r requirements-dev.txt)") from e
        self._core = ov.Core()
        self._model = self._core.read_model(str(model_path))
        self._config = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY",
                        "INFERENCE_PRECISION_HINT": "f32"}
        self._compiled: dict[tuple[int, ...], Any] = {}
        inp, out = self._model.inputs[0], self._model.outputs[0]
        self._inputs = [_Arg(inp.get_any_name(), [d.get_length() if d.is_static else None
                                                  for d in inp.get_partial_shape()])]
        self._outputs = [_Arg(out.get_any_name(), [d.get_length() if d.is_static else None
                                                   for d in out.get_partial_shape()])]
        self._meta = _Meta(_onnx_metadata(model_path))

    def _request(self, shape: tuple[int, ...]) -> Any:
        req = self._compiled.get(shape)
        if req is None:
            model = self._model.clone()
            model.reshape({self._inputs[0].name: list(shape)})
            req = self._core.compile_model(model, "CPU", self._config).create_infer_request()
            self._compiled[shape] = req
        return req

    def run(self, output_names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        batch = np.ascontiguousarray(feed[self._inputs[0].name], dtype=np.float32)
        req = self._request(tuple(batch.shape))
        req.infer({0: batch})
        return [np.array(req.get_output_tensor(0).data, copy=True)]

    def get_inputs(self) -> list[_Arg]:
        return self._inputs

    def get_outputs(self) -> list[_Arg]:
        return self._outputs

    def get_modelmeta(self) -> _Meta:
        return self._meta

    def get_providers(self) -> list[str]:
        return ["OpenVINO-CPU"]


def _onnx_metadata(model_path: Path) -> dict[str, str]:
    """The ONNX model's metadata_props (YOLO exports keep class names and stride there)."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}
