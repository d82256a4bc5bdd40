"""Optional PyTorch extra: export a YOLOv5/MegaDetector ``.pt`` checkpoint to ONNX.

``python -m scoring.export md_v5a.0.0.pt [--output md_v5a.0.0.onnx]``

Needs ``torch`` and the YOLOv5 model classes to unpickle the checkpoint
(``pip install -r requirements-torch.txt``); neither is in the base
requirements. The export matches how MegaDetector runs the checkpoint:
``float().fuse().eval()``, Detect layer in export mode (one output
[B, N, 5+nc]), dynamic batch/height/width, opset 17, plus a model manifest
beside the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

try:
    import torch
except ImportError as e:  # pragma: no cover - only without the extra
    raise ImportError("scoring.export needs the optional PyTorch extra: "
                      "pip install -r requirements-torch.txt") from e

from .manifest import MD_CATEGORIES, file_sha256

MD_KNOWN = {  # MegaDetector's published thresholds for MDv5
    "md_v5a.0.0": (0.2, 0.05),
    "md_v5b.0.0": (0.2, 0.05),
}


def load_checkpoint(pt_path: Path) -> Any:
    """Unpickle a YOLOv5 checkpoint and prepare it exactly as MegaDetector does."""
    ckpt = torch.load(str(pt_path), map_location="cpu", weights_only=False)
    model = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    for m in model.modules():  # same compatibility fix as MegaDetector
        if type(m) is torch.nn.Upsample and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
    model = model.float()
    if hasattr(model, "fuse"):
        model = model.fuse()
    return model.eval()


def export(pt_path: Path, onnx_path: Path | None = None, input_size: int = 1280, opset: int = 17,
           name: str | None = None, model: Any = None) -> Path:
    """Write ``onnx_path`` (default: beside the .pt) and its manifest; returns the ONNX path."""
    pt_path = Path(pt_path)
    onnx_path = Path(onnx_path) if onnx_path else pt_path.with_suffix(".onnx")
    if model is None:
        model = load_checkpoint(pt_path)
    stride = int(max(model.stride)) if hasattr(model, "stride") else 64
    detect = model.model[-1] if hasattr(model, "model") else None
    if detect is not None and hasattr(detect, "export"):
        detect.export = True  # one output tensor
        detect.dynamic = True  # rebuild the anchor grid from the traced input shape
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    categories = {str(i + 1): str(n) for i, n in enumerate(names)} if names else dict(MD_CATEGORIES)
    dummy = torch.zeros(1, 3, input_size, input_size * 3 // 4 // stride * stride or stride)
    with torch.no_grad():
        torch.onnx.export(
            model, (dummy,), str(onnx_path), input_names=["images"], output_names=["output0"],
            opset_version=opset, dynamo=False, do_constant_folding=True,
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                          "output0": {0: "batch", 1: "anchors"}},
        )
    import json

    name = name or pt_path.stem
    typical, conservative = MD_KNOWN.get(name, (0.2, 0.05))
    manifest = {
        "format": "mdbatch-model/1", "name": name, "detector": name, "input_size": input_size,
        "stride": stride, "pad_value": 114, "layout": "yolov5", "categories": categories,
        "typical_detection_threshold": typical, "conservative_detection_threshold": conservative,
        "sha256": file_sha256(onnx_path),
    }
    Path(str(onnx_path) + ".json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return onnx_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scoring.export", description=__doc__.splitlines()[1])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--output", type=Path, default=None)
    p.add_argument("--input-size", type=int, default=1280)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--name", default=None, help="model name for the manifest (default: file stem)")
    p.add_argument("--fp16", action="store_true", help="also write the fp16 variant NAME.fp16.onnx")
    a = p.parse_args(argv)
    if not a.checkpoint.is_file():
        print(f"error: checkpoint not found: {a.checkpoint}", file=sys.stderr)
        return 2
    out = export(a.checkpoint, a.output, a.input_size, a.opset, a.name)
    print(out)
    if a.fp16:  # issue 13: scoring.precision writes the half-precision variant beside it
        from .precision import convert_to_fp16

        print(convert_to_fp16(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
