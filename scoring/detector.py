"""The detector: an ONNX model's sessions (one per inference stream), its manifest, and the
per-image steps around inference (letterbox in, boxes out).

Why a module of its own: the scoring loop (engine.py) decides what to score and when; this holds
how one batch is scored, so a provider, precision or stream change touches only this file.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .buffers import BufferPool
from .images import Letterboxed, letterbox
from .manifest import ModelManifest, file_sha256, load_manifest
from .postprocess import select, to_detections
from .sessions import default_providers, preload_cuda, session_options
from .streams import StreamPlan, plan_streams

GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


class ModelError(Exception):
    """A model that is missing or cannot be loaded."""


# Set by a job that asked for a GPU node (the Azure ML backend sets it): scoring on the CPU there
# would crawl for hours on paid GPU time, so a missing CUDA provider is an error, not a fallback.
REQUIRE_CUDA_ENV = "MDBATCH_REQUIRE_CUDA"


def cuda_required() -> bool:
    return os.environ.get(REQUIRE_CUDA_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Detector:
    """An ONNX model's sessions (one per inference stream) plus its manifest."""

    def __init__(self, model_path: Path, threads: int | None = None,
                 providers: list[str] | None = None, precision: str = "fp32",
                 provider: str | None = None, streams: int | None = None) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelError(f"model not found: {model_path}")
        # --- issue 13: precision (fp16 variant) and named providers with tuned options ---------
        from .precision import PrecisionError, model_for_precision
        from .providers import ProviderError, session_providers, split_specs

        try:
            model_path = model_for_precision(model_path, precision)
        except PrecisionError as e:
            raise ModelError(str(e)) from None
        self.precision = precision
        self.model_path = model_path
        provider_options: list[dict[str, Any]] | None = None
        # --- end issue 13 ------------------------------------------------------------------------
        import onnxruntime as ort

        total_threads = threads or cpu_count()
        available = ort.get_available_providers()
        # --- issue 13: --provider NAME builds the list with tuned options; openvino swaps the runtime
        if providers is None and provider is not None:
            if provider == "openvino":
                from .ov_backend import OpenVINOSession

                try:
                    self.session = OpenVINOSession(model_path, total_threads)
                except Exception as e:
                    raise ModelError(f"cannot load model {model_path} with OpenVINO: {e}") from None
                self.sessions = [self.session]  # OpenVINO splits the cores itself
                self.plan = StreamPlan(1, total_threads)
                self._finish_init(model_path, available)
                return
            try:
                providers, provider_options = split_specs(session_providers(provider, available, precision))
            except ProviderError as e:
                raise ModelError(str(e)) from None
        # --- end issue 13 ------------------------------------------------------------------------
        if providers is None:
            providers = default_providers(available)
        preload_cuda(providers)
        try:  # several CPU sessions scoring at once (scoring/streams.py); one on a GPU
            self.plan = plan_streams(total_threads, streams, on_gpu=bool(set(providers) & GPU_PROVIDERS))
        except ValueError as e:
            raise ModelError(str(e)) from None

        def load(_: int) -> Any:
            return ort.InferenceSession(str(model_path), sess_options=session_options(self.plan.threads),
                                        providers=providers, provider_options=provider_options)

        try:
            with ThreadPoolExecutor(max_workers=self.plan.streams) as pool:  # ORT loads without the GIL
                self.sessions = list(pool.map(load, range(self.plan.streams)))
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"cannot load model {model_path}: {msg}") from None
        self.session = self.sessions[0]
        self._finish_init(model_path, available)

    def _finish_init(self, model_path: Path, available: list[str]) -> None:
        self.providers = self.session.get_providers()
        if cuda_required() and "CUDAExecutionProvider" not in self.providers:
            # ONNX Runtime falls back to the CPU with only a warning when the CUDA libraries fail
            # to load; on a GPU node that is a broken environment, so say so and stop
            raise ModelError(
                f"this job asked for the GPU ({REQUIRE_CUDA_ENV}=1) but ONNX Runtime's CUDA provider is "
                f"not in use (installed providers: {', '.join(available)}; session: "
                f"{', '.join(self.providers)}): check the job environment's onnxruntime-gpu, CUDA and "
                "cuDNN against the node's driver; refusing to score on the CPU"
            )
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        try:
            self.manifest: ModelManifest = load_manifest(model_path, meta)
        except ValueError as e:
            raise ModelError(str(e)) from None
        self.input_name = self.session.get_inputs()[0].name
        self.category_ids = self.manifest.class_ids
        shape = self.session.get_outputs()[0].shape  # yolov5 [B, N, 5+nc]; ultralytics [B, 4+nc, N]
        dim = shape[2] if self.manifest.layout == "yolov5" else shape[1]
        if len(shape) == 3 and isinstance(dim, int):
            classes = dim - (5 if self.manifest.layout == "yolov5" else 4)
            if classes > len(self.category_ids):
                raise ModelError(f"model {model_path} has {classes} classes but its categories name "
                                 f"{len(self.category_ids)}: every class needs a category")
        self.sha256 = self.manifest.sha256 or file_sha256(model_path)
        self.buffers = BufferPool(keep_per_shape=32)  # issue 13: reused letterbox/batch buffers
        self.on_gpu = self.providers[0] in GPU_PROVIDERS

    @property
    def streams(self) -> int:
        return len(self.sessions)

    def infer(self, batch: np.ndarray, session: Any = None) -> np.ndarray:
        """Raw model output for ``batch``, on ``session`` (one of :attr:`sessions`; default the first)."""
        session = session if session is not None else self.session
        if self.on_gpu and hasattr(session, "io_binding"):  # issue 13: one upload, one download
            return self._infer_bound(batch, session=session)
        return session.run(None, {self.input_name: batch})[0]

    def _infer_bound(self, batch: np.ndarray, device: str = "cuda", session: Any = None) -> np.ndarray:
        """IO binding: the batch is copied to the device once and the output back once, with no
        staging copies in between (``session.run`` with numpy does the same copies but also
        allocates per call); ``device='cpu'`` runs the same path on the CPU for tests."""
        import onnxruntime as ort

        session = session if session is not None else self.session
        binding = session.io_binding()
        binding.bind_ortvalue_input(self.input_name,
                                    ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), device, 0))
        binding.bind_output(session.get_outputs()[0].name, device, 0)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def infer_checked(self, batch: np.ndarray, session: Any = None) -> np.ndarray:
        """:meth:`infer`, with any runtime failure (CUDA, shape, ORT) as one clear ModelError."""
        try:
            return self.infer(batch, session)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"inference failed on a batch of {len(batch)}: {msg[:300]}") from None

    def preprocess(self, img: np.ndarray) -> Letterboxed:
        m = self.manifest
        return letterbox(img, m.input_size, m.stride, m.pad_value, alloc=self.buffers.take)  # issue 13

    def detections(self, pred: np.ndarray, input_hw: tuple[int, int], orig_hw: tuple[int, int],
                   threshold: float) -> list[dict[str, Any]]:
        det = select(pred, self.manifest.layout, threshold)
        return to_detections(det, input_hw, orig_hw, threshold, self.category_ids, self.manifest.layout)
