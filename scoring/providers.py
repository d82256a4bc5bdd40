"""Which execution provider scores a shard, and with which settings.

Why a module of its own: the provider list is where GPU speed is won or lost (cuDNN's algorithm
search, the memory arena, TensorRT's engine cache and fp16 mode), and it must be built the same
way by the CLI, the benchmark and the tests (which, without a GPU, check the options built).

Names (``--provider``): ``auto`` (CUDA when ONNX Runtime has it, else the CPU), ``cuda``,
``tensorrt`` (TensorRT, then CUDA for what TensorRT does not take, then CPU), ``cpu`` (ONNX
Runtime's CPU provider) and ``openvino`` (Intel's OpenVINO runtime on the CPU; not an ONNX
Runtime provider, see :mod:`scoring.ov_backend`).

Option names are ONNX Runtime's (CUDA / TensorRT execution provider docs, cited in
docs/notes/issue-13.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PROVIDER_NAMES = ("auto", "cpu", "cuda", "tensorrt", "openvino")
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"

ProviderSpec = str | tuple[str, dict[str, Any]]


class ProviderError(Exception):
    """An unknown provider name, or one this ONNX Runtime build does not have."""


def cuda_options(device_id: int = 0) -> dict[str, Any]:
    """CUDA provider settings for a detector with few, fixed input shapes.

    Exhaustive cuDNN search pays once per input shape (a shard has 2-4 letterbox shapes) for the
    fastest convolution algorithm; the largest workspace lets cuDNN pick the algorithms that need
    one; copies on the compute stream keep input upload ordered without extra syncs; the arena
    grows by what is asked, not to the next power of two (a batch of 16 1280x1280 activations
    would otherwise reserve twice the memory).
    """
    return {
        "device_id": device_id,
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "cudnn_conv_use_max_workspace": "1",
        "do_copy_in_default_stream": "1",
        "arena_extend_strategy": "kSameAsRequested",
    }


def tensorrt_options(precision: str, cache_dir: Path, input_size: int = 1280, max_batch: int = 16,
                     device_id: int = 0) -> dict[str, Any]:
    """TensorRT provider settings: fp16 kernels for ``fp16``, engines cached on disk (an engine
    build takes minutes; a shard must not pay it each time), one optimisation profile covering
    batch 1..``max_batch`` and letterbox shapes from one stride block up to the full square."""
    s = input_size
    return {
        "device_id": device_id,
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_max_workspace_size": str(4 << 30),
        "trt_profile_min_shapes": "images:1x3x64x64",
        "trt_profile_opt_shapes": f"images:{max(1, max_batch // 2)}x3x{s * 3 // 4}x{s}",
        "trt_profile_max_shapes": f"images:{max_batch}x3x{s}x{s}",
    }


def default_cache_dir() -> Path:
    return Path(os.environ.get("MDBATCH_TRT_CACHE", Path.home() / ".cache" / "mdbatch" / "tensorrt"))


def session_providers(name: str | None, available: list[str], precision: str = "fp32",
                      input_size: int = 1280, max_batch: int = 16,
                      cache_dir: Path | None = None) -> list[ProviderSpec]:
    """The ``providers`` list for ``onnxruntime.InferenceSession`` for provider ``name``.

    ``auto`` never fails (CUDA if present, else CPU); an explicit ``cuda``/``tensorrt`` that this
    ONNX Runtime lacks is an error naming what is installed, so a GPU job never crawls on the CPU.
    """
    name = (name or "auto").lower()
    if name not in PROVIDER_NAMES:
        raise ProviderError(f"unknown provider {name!r}: choose one of {', '.join(PROVIDER_NAMES)}")
    if name == "openvino":
        raise ProviderError("the openvino provider is not an ONNX Runtime provider (scoring.ov_backend)")
    if name == "cpu":
        return [CPU]
    if name == "auto":
        return [(CUDA, cuda_options()), CPU] if CUDA in available else [CPU]
    if name == "cuda":
        if CUDA not in available:
            raise ProviderError(f"provider cuda asked for but ONNX Runtime has only {', '.join(available)} "
                                "(install onnxruntime-gpu)")
        return [(CUDA, cuda_options()), CPU]
    if TENSORRT not in available:
        raise ProviderError(f"provider tensorrt asked for but ONNX Runtime has only {', '.join(available)} "
                            "(onnxruntime-gpu with TensorRT libraries)")
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    specs: list[ProviderSpec] = [(TENSORRT, tensorrt_options(precision, cache, input_size, max_batch))]
    if CUDA in available:
        specs.append((CUDA, cuda_options()))
    return [*specs, CPU]


def split_specs(specs: list[ProviderSpec]) -> tuple[list[str], list[dict[str, Any]]]:
    """(names, options) in the two-list form ``InferenceSession(providers=, provider_options=)`` takes."""
    names, opts = [], []
    for s in specs:
        if isinstance(s, tuple):
            names.append(s[0])
            opts.append(dict(s[1]))
        else:
            names.append(s)
            opts.append({})
    return names, opts
