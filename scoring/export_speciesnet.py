"""Optional PyTorch extra: export a SpeciesNet "always crop" classifier to ONNX with its manifest.

``python -m scoring.export_speciesnet MODEL_FOLDER [--output speciesnet.onnx] [--name NAME]``

MODEL_FOLDER is a SpeciesNet model folder as the ``speciesnet`` package downloads it (Kaggle /
Hugging Face): ``info.json`` naming the ``classifier`` checkpoint (a whole pickled PyTorch module,
loaded with ``torch.load(weights_only=False)`` as ``SpeciesNetClassifier`` does), its
``classifier_labels`` (one taxonomy string a line, line i = class i), and the ensemble's
``taxonomy`` and ``geofence`` files. Only ``"type": "always_crop"`` is supported: its input is one
detection crop, NHWC [B, 480, 480, 3] in 0..1, and its output logits [B, classes].

Writes OUTPUT (.onnx, opset 17, dynamic batch), OUTPUT.json (classifier manifest:
``crop: speciesnet``, every detection category cropped at conf >= 0.1 as SpeciesNet does), and
the taxonomy and geofence files beside it for ``--ensemble``. Needs torch (and, for the published
checkpoints, the ``onnx2torch`` classes they were pickled with) in the PyTorch venv; kept apart
from ``scoring.export`` (MegaDetector detectors).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from .manifest import file_sha256

CLASSIFIER_FORMAT = "mdbatch-classifier/1"  # = scoring.classifier_manifest.CLASSIFIER_FORMAT
IMG_SIZE = 480  # SpeciesNetClassifier.IMG_SIZE
CROP_THRESHOLD = 0.1  # speciesnet.constants.DEFAULT_DETECTION_THRESHOLD_FOR_CLASSIFICATION


class ExportError(Exception):
    """A model folder that cannot be exported (the message names the file and the fix)."""


def read_info(folder: Path) -> dict[str, Any]:
    try:
        info = json.loads((folder / "info.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{folder} has no info.json: pass a SpeciesNet model folder") from None
    except (OSError, ValueError) as e:
        raise ExportError(f"{folder / 'info.json'} is not readable JSON: {e}") from None
    missing = [k for k in ("version", "type", "classifier", "classifier_labels") if k not in info]
    if missing:
        raise ExportError(f"{folder / 'info.json'} lacks {', '.join(missing)}")
    if info["type"] != "always_crop":
        raise ExportError(f"{folder} holds a {info['type']!r} SpeciesNet model; only 'always_crop' "
                          "(one crop per detection) is supported")
    return info


def read_labels(path: Path) -> list[str]:
    """Line i is class i (SpeciesNetClassifier reads them so); trailing blank lines dropped."""
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or any(not ln for ln in lines):
        raise ExportError(f"{path}: every line must be a label (no blank lines)")
    return lines


def export(folder: Path, onnx_path: Path | None = None, name: str | None = None, opset: int = 17) -> Path:
    try:
        import torch
    except ImportError as e:
        raise ExportError("scoring.export_speciesnet needs PyTorch: run it with the PyTorch venv "
                          "(.venv-torch, pip install -r requirements-torch.txt)") from e
    folder = Path(folder)
    info = read_info(folder)
    labels = read_labels(folder / info["classifier_labels"])
    version = str(info["version"])
    onnx_path = Path(onnx_path) if onnx_path else folder / f"speciesnet-{version}.onnx"
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    model = torch.load(str(folder / info["classifier"]), map_location="cpu", weights_only=False)
    model.eval()
    dummy = torch.zeros(2, IMG_SIZE, IMG_SIZE, 3)
    with torch.no_grad():
        out = model(dummy)
        if tuple(out.shape) != (2, len(labels)):
            raise ExportError(f"the classifier answers {list(out.shape)} for 2 crops; its labels file "
                              f"lists {len(labels)} classes")
        torch.onnx.export(model, (dummy,), str(onnx_path), input_names=["crops"], output_names=["logits"],
                          opset_version=opset, dynamo=False, do_constant_folding=True,
                          dynamic_axes={"crops": {0: "batch"}, "logits": {0: "batch"}})
    stem = onnx_path.name.removesuffix(".onnx")
    ensemble = {}
    for key, suffix in (("taxonomy", ".taxonomy.txt"), ("geofence", ".geofence.json")):
        if info.get(key) and (folder / info[key]).is_file():
            shutil.copyfile(folder / info[key], onnx_path.parent / f"{stem}{suffix}")
            ensemble[key] = f"{stem}{suffix}"
    name = name or stem
    manifest: dict[str, Any] = {
        "format": CLASSIFIER_FORMAT, "name": name, "classifier": f"speciesnet-{version}",
        "input_size": IMG_SIZE, "layout": "nhwc", "crop": "speciesnet",
        "normalisation": {"divide": 255.0, "mean": [0, 0, 0], "std": [1, 1, 1]}, "output": "logits",
        "labels": labels, "crop_categories": ["1", "2", "3"], "crop_threshold": CROP_THRESHOLD,
        "max_crops_per_image": None, "top_k": 5, "typical_classification_threshold": 0.65,
        "source": {"speciesnet_version": version, "type": info["type"]},
    }
    if len(ensemble) == 2:
        manifest["ensemble"] = ensemble
    manifest["sha256"] = file_sha256(onnx_path)
    Path(str(onnx_path) + ".json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return onnx_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scoring.export_speciesnet",
                                description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="SpeciesNet model folder (info.json, checkpoint, labels)")
    p.add_argument("--output", "-o", type=Path, default=None)
    p.add_argument("--name", default=None, help="classifier version name (default: output file stem)")
    p.add_argument("--opset", type=int, default=17)
    a = p.parse_args(argv)
    try:
        out = export(a.folder, a.output, a.name, a.opset)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
