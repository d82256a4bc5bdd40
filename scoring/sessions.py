"""ONNX Runtime session settings shared by the detector and the crop classifier.

One place, so both stages of a shard job run with the same threading rules and provider order.
"""

from __future__ import annotations

import contextlib
from typing import Any

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def session_options(threads: int | None) -> Any:
    """Sequential execution, full graph optimisation, one inter-op thread, no spinning (the
    decode threads need the cores while a session waits), only errors logged."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def default_providers(available: list[str]) -> list[str]:
    """CUDA first when this ONNX Runtime has it, then the CPU."""
    return [p for p in DEFAULT_PROVIDERS if p in available]


def preload_cuda(providers: list[str]) -> None:
    """onnxruntime-gpu[cuda,cudnn] (the AML job environment) ships CUDA and cuDNN as pip wheels;
    load them from there rather than depend on the image's library path."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in providers and hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):
            ort.preload_dlls()
