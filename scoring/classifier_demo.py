"""A tiny crop classifier built on the fly that names a crop by its dominant colour.

For tests and the CLI's demo, like ``scoring.demo_model`` for detectors: its answer is known in
advance (red -> fox, green -> wolf, blue -> elk, yellow -> bear, anything grey -> moose), so a
test can paint rectangles, run detector + classifier and assert every box's species. Its label
list is SpeciesNet-style taxonomy strings (``uuid;class;order;family;genus;species;common``).

Model: input ``crops`` [B, S, S, 3] (NHWC, 0..1, like SpeciesNet), mean colour per crop, one
matrix product -> ``logits`` [B, 5]. Only numpy is imported at module level.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .classifier_manifest import CLASSIFIER_FORMAT
from .manifest import file_sha256

#: label (taxonomy string) and the mean colour weights of its logit
COLOUR_CLASSES: list[tuple[str, tuple[float, float, float]]] = [
    ("mammalia;carnivora;canidae;vulpes;vulpes;fox", (1.0, -1.0, -1.0)),
    ("mammalia;carnivora;canidae;canis;lupus;wolf", (-1.0, 1.0, -1.0)),
    ("mammalia;cetartiodactyla;cervidae;cervus;canadensis;elk", (-1.0, -1.0, 1.0)),
    ("mammalia;carnivora;ursidae;ursus;americanus;bear", (0.5, 0.5, -1.0)),
    ("mammalia;cetartiodactyla;cervidae;alces;alces;moose", (0.0, 0.0, 0.0)),
]
#: colour name -> (RGB, expected class id) for tests
COLOURS: dict[str, tuple[tuple[int, int, int], str]] = {
    "red": ((255, 0, 0), "0"),
    "green": ((0, 255, 0), "1"),
    "blue": ((0, 0, 255), "2"),
    "yellow": ((255, 255, 0), "3"),
    "grey": ((128, 128, 128), "4"),
}
GAIN = 8.0


def taxonomy_labels() -> list[str]:
    """SpeciesNet-style labels: a stable uuid (from the name) then the six taxonomy fields."""
    return [f"{uuid.uuid5(uuid.NAMESPACE_URL, 'mdbatch-demo/' + t)};{t}" for t, _ in COLOUR_CLASSES]


#: higher taxa of the demo labels (SpeciesNet-style), for the ensemble's roll-up
DEMO_HIGHER_TAXA = ["mammalia;carnivora;canidae;;;canine family", "mammalia;carnivora;;;;carnivorous mammal",
                    "mammalia;cetartiodactyla;cervidae;;;deer family", "mammalia;;;;;mammal"]
#: the demo geofence: foxes only in Great Britain (so --country USA rolls a fox up to its family)
DEMO_GEOFENCE = {"mammalia;carnivora;canidae;vulpes;vulpes": {"allow": {"GBR": []}}}


def write_demo_ensemble(folder: Path, stem: str) -> dict[str, str]:
    """Taxonomy and geofence files for the demo labels beside the model; the manifest's ``ensemble``."""
    taxa = taxonomy_labels() + [f"{uuid.uuid5(uuid.NAMESPACE_URL, 'mdbatch-demo/' + t)};{t}"
                                for t in DEMO_HIGHER_TAXA]
    (folder / f"{stem}.taxonomy.txt").write_text("\n".join(taxa) + "\n", encoding="utf-8")
    (folder / f"{stem}.geofence.json").write_text(json.dumps(DEMO_GEOFENCE) + "\n", encoding="utf-8")
    return {"taxonomy": f"{stem}.taxonomy.txt", "geofence": f"{stem}.geofence.json"}


def write_classifier_manifest(model_path: Path, **fields: Any) -> Path:
    """``<model file>.json`` with the classifier format and the file's sha256."""
    model_path = Path(model_path)
    body = {"format": CLASSIFIER_FORMAT, **fields, "sha256": file_sha256(model_path)}
    out = Path(str(model_path) + ".json")
    out.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return out


def build_colour_classifier(path: Path, input_size: int = 480, name: str | None = None,
                            classes: list[tuple[str, tuple[float, float, float]]] | None = None,
                            **manifest: Any) -> Path:
    """Build the colour classifier at ``path`` (+ manifest); ``manifest`` overrides fields
    (e.g. ``crop_categories=["1", "2", "3"]``, ``crop_threshold``). ``classes`` replaces the
    label list: (full label, mean-colour weights of its logit) each."""
    import onnx
    from onnx import TensorProto, helper

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [lb for lb, _ in classes] if classes else taxonomy_labels()
    classes = classes or COLOUR_CLASSES
    w = np.asarray([c for _, c in classes], np.float32).T * np.float32(GAIN)  # [3, K]
    nodes = [
        helper.make_node("ReduceMean", ["crops"], ["mean"], axes=[1, 2], keepdims=0),  # [B,3]
        helper.make_node("MatMul", ["mean", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "colour_classifier",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", input_size, input_size, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(classes)])],
        initializer=[onnx.numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="mdbatch-scoring-demo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    name = name or path.name.removesuffix(".onnx")
    fields: dict[str, Any] = {
        "name": name, "classifier": name, "input_size": input_size, "layout": "nhwc",
        "crop": "speciesnet", "normalisation": {"divide": 255.0, "mean": [0, 0, 0], "std": [1, 1, 1]},
        "output": "logits", "labels": labels, "crop_categories": ["1"],
        "crop_threshold": 0.1, "top_k": 5, "typical_classification_threshold": 0.5,
    }
    fields.update(manifest)
    if fields.get("ensemble") is True:  # the demo's own taxonomy and geofence files
        fields["ensemble"] = write_demo_ensemble(path.parent, path.name.removesuffix(".onnx"))
    write_classifier_manifest(path, **fields)
    return path


def paint(img: np.ndarray, colour: str, box_norm: tuple[float, float, float, float]) -> None:
    """Paint a named colour over ``box_norm`` (x, y, w, h normalized) of an HxWx3 RGB image."""
    from .demo_model import rect_pixels

    h, w = img.shape[:2]
    x0, y0, x1, y1 = rect_pixels(w, h, box_norm)
    img[y0:y1, x0:x1] = COLOURS[colour][0]
