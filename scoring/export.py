"""Optional PyTorch extra: export a published MegaDetector ``.pt`` checkpoint to ONNX.

``python -m scoring.export md_v5a.0.0.pt [--output md_v5a.0.0.onnx] [--name NAME]``

Every published family loads (see ``scoring.checkpoints``): YOLOv5 repository pickles (MDv5a/b,
MDv1000-redwood/-spruce), YOLOv9 (MDv1000-cedar, the ``yolov9pip`` classes) and Ultralytics
YOLO11 (MDv1000-larch/-sorrel). Needs torch plus the family's library
(``pip install -r requirements-torch.txt``); none of it is in the base requirements. The model
is prepared as MegaDetector prepares it (``float().fuse().eval()``), its Detect head put in
export mode (one output: [B, N, 5+nc] for YOLOv5, [B, 4+nc, N] for the others), dynamic
batch/height/width, opset 17. The manifest beside the file carries input size, stride, layout,
categories and thresholds from the checkpoint's ``megadetector_info.json`` and MegaDetector's
table of known models. Errors are one ``error: ...`` line naming the problem, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

try:
    import torch
except ImportError as e:  # pragma: no cover - only without the extra
    _MISSING = ("scoring.export needs the optional PyTorch extra (missing package "
                f"{e.name or 'torch'}): pip install -r requirements-torch.txt")
    if __name__ == "__main__":  # the command line: one line, no traceback
        print(f"error: {_MISSING}", file=sys.stderr)
        sys.exit(2)
    raise ImportError(_MISSING) from e

from .checkpoints.facts import CheckpointError, CheckpointFacts, read_facts, stride_for
from .manifest import MD_CATEGORIES, file_sha256


def load_checkpoint(pt_path: Path, facts: CheckpointFacts | None = None) -> Any:
    """Unpickle ``pt_path`` with its family's library and prepare it as MegaDetector does."""
    from .checkpoints.loading import load_model

    return load_model(Path(pt_path), facts or read_facts(Path(pt_path)))


def _detect_head(model: Any) -> Any:
    layers = getattr(model, "model", None)
    try:
        return layers[-1] if layers is not None else None
    except (TypeError, IndexError):
        return None


def _categories(model: Any) -> dict[str, str]:
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    return {str(i + 1): str(n) for i, n in enumerate(names)} if names else dict(MD_CATEGORIES)


def export(pt_path: Path, onnx_path: Path | None = None, input_size: int | None = None, opset: int = 17,
           name: str | None = None, model: Any = None) -> Path:
    """Write ``onnx_path`` (default: beside the .pt) and its manifest; returns the ONNX path.

    ``input_size`` overrides the checkpoint's own (its metadata, else MegaDetector's 1280);
    ``name`` is the manifest name and is also used to look the model up in MegaDetector's table.
    """
    pt_path = Path(pt_path)
    onnx_path = Path(onnx_path) if onnx_path else pt_path.with_suffix(".onnx")
    facts = read_facts(pt_path, name=name)
    if model is None:
        model = load_checkpoint(pt_path, facts)
    size = int(input_size or facts.image_size)
    net_stride = int(max(model.stride)) if hasattr(model, "stride") else facts.stride
    head = _detect_head(model)
    if head is not None and hasattr(head, "export"):
        head.export = True  # one output tensor
        head.dynamic = True  # rebuild grids/anchors from the traced input shape
        if hasattr(head, "format"):
            head.format = "onnx"
    # trace on a 4:3 letterboxed shape; the exported axes are dynamic anyway
    dummy = torch.zeros(1, 3, size, max(size * 3 // 4 // net_stride * net_stride, net_stride))
    with torch.no_grad():
        torch.onnx.export(
            model, (dummy,), str(onnx_path), input_names=["images"], output_names=["output0"],
            opset_version=opset, dynamo=False, do_constant_folding=True,
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                          "output0": {0: "batch", 1 if facts.layout == "yolov5" else 2: "anchors"}},
        )
    manifest_name = name or pt_path.stem
    manifest = {
        "format": "mdbatch-model/1", "name": manifest_name, "detector": manifest_name,
        "input_size": size, "stride": stride_for(size),
        "pad_value": 114, "layout": facts.layout, "model_type": facts.model_type,
        "categories": _categories(model),
        "typical_detection_threshold": facts.typical,
        "conservative_detection_threshold": facts.conservative,
        "sha256": file_sha256(onnx_path),
    }
    if facts.version:
        manifest["megadetector_version"] = facts.version
    Path(str(onnx_path) + ".json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return onnx_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scoring.export", description=__doc__.splitlines()[1])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--output", type=Path, default=None)
    p.add_argument("--input-size", type=int, default=None,
                   help="override the checkpoint's image size (default: its metadata, else 1280)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--name", default=None, help="model name for the manifest (default: file stem)")
    p.add_argument("--fp16", action="store_true", help="also write the fp16 variant NAME.fp16.onnx")
    a = p.parse_args(argv)
    if not a.checkpoint.is_file():
        print(f"error: checkpoint not found: {a.checkpoint}", file=sys.stderr)
        return 2
    try:
        out = export(a.checkpoint, a.output, a.input_size, a.opset, a.name)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(f"error: exporting {a.checkpoint.name} needs the package {e.name!r}, which is not installed; "
              "install the PyTorch extra: pip install -r requirements-torch.txt", file=sys.stderr)
        return 2
    except Exception as e:  # one line for the CLI and mdbatch; details are torch's
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"error: exporting {a.checkpoint.name} failed: {type(e).__name__}: {first}", file=sys.stderr)
        return 2
    print(out)
    if a.fp16:  # issue 13: scoring.precision writes the half-precision variant beside it
        from .precision import convert_to_fp16

        print(convert_to_fp16(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
