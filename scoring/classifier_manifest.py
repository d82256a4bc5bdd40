"""Classifier manifest: what the shard job needs to know about a crop classifier file.

Kept free of onnxruntime (like ``scoring.manifest``) so the CLI and the service can list and
check classifiers cheaply. The file sits beside the model, ``NAME.onnx.json``, and is told apart
from a detector manifest by ``"format": "mdbatch-classifier/1"``. See docs/contracts.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .manifest import file_sha256, manifest_path

CLASSIFIER_FORMAT = "mdbatch-classifier/1"
LAYOUTS = ("nhwc", "nchw")
OUTPUTS = ("logits", "probabilities")


class ClassifierManifestError(ValueError):
    """A classifier manifest that cannot be used (the message names the file and the field)."""


@dataclass(frozen=True)
class Label:
    """One output class: short name (``classification_categories``) and taxonomy string
    (``classification_category_descriptions``)."""

    name: str
    description: str


@dataclass(frozen=True)
class ClassifierManifest:
    """Everything crop, inference and output need; defaults are SpeciesNet "always crop"'s."""

    name: str
    classifier: str  # -> info.classifier
    labels: tuple[Label, ...]
    input_size: int = 480
    layout: str = "nhwc"
    crop: str = "speciesnet"
    divide: float = 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output: str = "logits"
    crop_categories: tuple[str, ...] = ("1",)
    crop_threshold: float = 0.1
    max_crops_per_image: int | None = None
    top_k: int = 5
    batch_size: int | None = None
    typical_classification_threshold: float = 0.5
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def categories(self) -> dict[str, str]:
        return {str(i): lb.name for i, lb in enumerate(self.labels)}

    @property
    def descriptions(self) -> dict[str, str]:
        return {str(i): lb.description for i, lb in enumerate(self.labels)}


def label_from(raw: Any) -> Label:
    """A label from a taxonomy string (``uuid;class;order;family;genus;species;common name``: the
    name is the last non-blank part) or from ``{"name": ..., "description": ...}``."""
    if isinstance(raw, str):
        parts = [p.strip() for p in raw.split(";")]
        name = next((p for p in reversed(parts) if p), "")
        return Label(name=name, description=raw.strip())
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        return Label(name=raw["name"].strip(), description=str(raw.get("description") or raw["name"]).strip())
    raise ValueError(f"a label must be a taxonomy string or {{'name', 'description'}}, got {raw!r}")


def is_classifier_manifest(model_path: Path) -> bool:
    """True when the manifest beside ``model_path`` says it is a classifier."""
    mpath = manifest_path(Path(model_path))
    if mpath is None:
        return False
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("format") == CLASSIFIER_FORMAT


def _triple(v: Any, what: str) -> tuple[float, float, float]:
    if not isinstance(v, list | tuple) or len(v) != 3:
        raise ValueError(f"{what} must be a list of 3 numbers")
    return (float(v[0]), float(v[1]), float(v[2]))


def load_classifier_manifest(model_path: Path, verify_sha256: bool = True) -> ClassifierManifest:
    """The manifest beside ``model_path`` (required: a classifier needs its labels)."""
    model_path = Path(model_path)
    mpath = manifest_path(model_path)
    if mpath is None:
        raise ClassifierManifestError(f"classifier {model_path} has no manifest "
                                      f"({model_path.name}.json beside it)")
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ClassifierManifestError(f"classifier manifest {mpath} is not readable JSON: {e}") from None
    if not isinstance(raw, dict) or raw.get("format") != CLASSIFIER_FORMAT:
        raise ClassifierManifestError(f"{mpath} is not a classifier manifest "
                                      f"(\"format\": \"{CLASSIFIER_FORMAT}\")")
    try:
        labels_raw = raw.get("labels")
        if not isinstance(labels_raw, list) or not labels_raw:
            raise ValueError("labels must be a non-empty list")
        labels = tuple(label_from(x) for x in labels_raw)
        if any(not lb.name for lb in labels):
            raise ValueError("every label needs a non-blank name")
        norm = raw.get("normalisation") or {}
        if not isinstance(norm, dict):
            raise ValueError("normalisation must be an object")
        cats = raw.get("crop_categories", ["1"])
        if not isinstance(cats, list) or not all(isinstance(c, str | int) for c in cats):
            raise ValueError("crop_categories must be a list of detection category ids")
        maxc = raw.get("max_crops_per_image")
        name = str(raw.get("name") or model_path.name.removesuffix(".onnx"))
        m = ClassifierManifest(
            name=name, classifier=str(raw.get("classifier") or name), labels=labels,
            input_size=int(raw.get("input_size", 480)), layout=str(raw.get("layout", "nhwc")),
            crop=str(raw.get("crop", "speciesnet")), divide=float(norm.get("divide", 255.0)),
            mean=_triple(norm.get("mean", [0, 0, 0]), "normalisation.mean"),
            std=_triple(norm.get("std", [1, 1, 1]), "normalisation.std"),
            output=str(raw.get("output", "logits")),
            crop_categories=tuple(str(c) for c in cats),
            crop_threshold=float(raw.get("crop_threshold", 0.1)),
            max_crops_per_image=None if maxc is None else int(maxc),
            top_k=int(raw.get("top_k", 5)),
            batch_size=None if raw.get("batch_size") is None else int(raw["batch_size"]),
            typical_classification_threshold=float(raw.get("typical_classification_threshold", 0.5)),
            sha256=raw.get("sha256"),
            extra={"manifest_dir": str(mpath.parent),
                   **{k: raw[k] for k in ("ensemble",) if isinstance(raw.get(k), dict)}},
        )
    except (TypeError, ValueError) as e:
        raise ClassifierManifestError(f"classifier manifest {mpath}: {e}") from None
    from .crops import CROP_RULES  # here: the exporter (torch venv) imports this module without OpenCV

    problems = []
    if m.layout not in LAYOUTS:
        problems.append(f"layout must be one of {LAYOUTS}")
    if m.crop not in CROP_RULES:
        problems.append(f"crop must be one of {CROP_RULES}")
    if m.output not in OUTPUTS:
        problems.append(f"output must be one of {OUTPUTS}")
    if m.input_size <= 0 or m.top_k <= 0 or m.divide <= 0 or any(s <= 0 for s in m.std):
        problems.append("input_size, top_k, normalisation.divide and std must be positive")
    if m.batch_size is not None and m.batch_size <= 0:
        problems.append("batch_size must be positive")
    if not 0.0 <= m.crop_threshold <= 1.0:
        problems.append("crop_threshold must be within 0..1")
    if problems:
        raise ClassifierManifestError(f"classifier manifest {mpath}: " + "; ".join(problems))
    if verify_sha256 and m.sha256 and file_sha256(model_path) != str(m.sha256).lower():
        raise ClassifierManifestError(f"classifier file {model_path} does not match the sha256 in {mpath}")
    return m
