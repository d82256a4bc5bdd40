"""Scoring engine: MegaDetector-family inference on a shard of images (``python -m scoring``).

Standalone: imports numpy, onnxruntime, OpenCV/Pillow and Azure Storage/Identity
SDKs only. Heavy modules load lazily so ``scoring.demo_model`` and
``scoring.manifest`` stay cheap to import for the CLI.
"""

__all__ = ["FORMAT_VERSION"]

FORMAT_VERSION = "1.6"
