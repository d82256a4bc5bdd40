"""Model manifest: what the scorer needs to know about a detector file.

Kept free of onnxruntime so the CLI can read manifests cheaply. See
docs/contracts.md ("Model manifest") for the file format.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MD_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
# yolov5: [B, N, 5+nc]; ultralytics: [B, 4+nc, N] with ultralytics box scaling; yolov9: the
# anchor-free output of ultralytics with YOLOv5 box scaling (what the yolov9 library does)
LAYOUTS = ("yolov5", "ultralytics", "yolov9")
ANCHOR_FREE_LAYOUTS = ("ultralytics", "yolov9")


class ManifestError(ValueError):
    """A model manifest that cannot be used."""


@dataclass(frozen=True)
class ModelManifest:
    """Everything pre/postprocessing needs; defaults are MegaDetector v5's."""

    name: str
    detector: str
    input_size: int = 1280
    stride: int = 64
    pad_value: int = 114
    layout: str = "yolov5"
    categories: dict[str, str] = field(default_factory=lambda: dict(MD_CATEGORIES))
    typical_detection_threshold: float = 0.2
    conservative_detection_threshold: float = 0.05
    sha256: str | None = None

    @property
    def class_ids(self) -> list[str]:
        """Category id of each model class index: the manifest's ids in numeric order, so class 0
        is "1" for MegaDetector and "0" for a manifest that numbers from 0."""
        return sorted(self.categories, key=int)

    def to_json(self) -> dict[str, Any]:
        return {"format": "mdbatch-model/1", **asdict(self)}


def manifest_path(model_path: Path) -> Path | None:
    """``MODEL.json`` (preferred: model file name + .json) or ``MODEL-without-suffix.json``."""
    model_path = Path(model_path)
    for cand in (Path(str(model_path) + ".json"), model_path.with_suffix(".json")):
        if cand.is_file() and cand != model_path:
            return cand
    return None


def parse_names(raw: str | None) -> dict[str, str] | None:
    """Categories from ONNX metadata ``names`` (``{0: 'animal', ...}`` or a list); ids = index + 1."""
    if not raw:
        return None
    try:
        val = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        try:
            val = json.loads(raw)
        except ValueError:
            return None
    if isinstance(val, dict):
        items = sorted((int(k), str(v)) for k, v in val.items())
    elif isinstance(val, list | tuple):
        items = [(i, str(v)) for i, v in enumerate(val)]
    else:
        return None
    return {str(i + 1): name for i, name in items if name.strip()}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(model_path: Path, metadata: dict[str, str] | None = None,
                  verify_sha256: bool = True) -> ModelManifest:
    """Manifest for ``model_path``: the file beside it, else defaults + ONNX ``metadata``."""
    model_path = Path(model_path)
    metadata = metadata or {}
    raw: dict[str, Any] = {}
    mpath = manifest_path(model_path)
    if mpath is not None:
        try:
            raw = json.loads(mpath.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ManifestError(f"model manifest {mpath} is not valid JSON: {e}") from e
        if not isinstance(raw, dict):
            raise ManifestError(f"model manifest {mpath} must be a JSON object")
    name = str(raw.get("name") or model_path.stem)
    categories = raw.get("categories") or parse_names(metadata.get("names")) or dict(MD_CATEGORIES)
    stride_meta = metadata.get("stride")
    try:
        m = ModelManifest(
            name=name,
            detector=str(raw.get("detector") or name),
            input_size=int(raw.get("input_size", 1280)),
            stride=int(raw.get("stride", stride_meta or 64)),
            pad_value=int(raw.get("pad_value", 114)),
            layout=str(raw.get("layout", "yolov5")),
            categories={str(k): str(v) for k, v in categories.items()},
            typical_detection_threshold=float(raw.get("typical_detection_threshold", 0.2)),
            conservative_detection_threshold=float(raw.get("conservative_detection_threshold", 0.05)),
            sha256=raw.get("sha256"),
        )
    except (TypeError, ValueError) as e:
        raise ManifestError(f"model manifest {mpath}: {e}") from e
    if m.layout not in LAYOUTS:
        raise ManifestError(f"model manifest {mpath}: layout must be one of {LAYOUTS}, got {m.layout!r}")
    if m.input_size <= 0 or m.stride <= 0:
        raise ManifestError(f"model manifest {mpath}: input_size and stride must be positive")
    if not m.categories or not all(k.isdigit() and v.strip() for k, v in m.categories.items()):
        raise ManifestError(f"model manifest {mpath}: categories must map integer ids (as strings) "
                            "to non-blank names")
    if verify_sha256 and m.sha256 and file_sha256(model_path) != m.sha256.lower():
        raise ManifestError(f"model file {model_path} does not match the sha256 in {mpath}")
    return m
