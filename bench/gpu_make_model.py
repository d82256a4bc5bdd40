"""Runs with torch + yolov5 (bench/.peer-venv, or the GPU machine's python): a random-weight
MDv5-architecture checkpoint (``yolov5x6`` = MDv5 size, ``yolov5s6`` for a quick run), saved as
the .pt MegaDetector loads and the same weights exported to ONNX with scoring.export (the fp16
variant is written by gpu_bench.py (scoring.precision, in the scorer's python).

``python bench/gpu_make_model.py OUT_DIR [yolov5x6|yolov5s6]`` prints the paths as JSON.
"""

import json
import sys
import time
from pathlib import Path

import torch
import yolov5
from yolov5.models.yolo import Model

out = Path(sys.argv[1])
arch = sys.argv[2] if len(sys.argv) > 2 else "yolov5x6"
out.mkdir(parents=True, exist_ok=True)
pt = out / f"md_random_{arch}.pt"
onnx_path = out / f"md_random_{arch}.onnx"
t0 = time.monotonic()
if not (pt.exists() and onnx_path.exists()):
    torch.manual_seed(0)
    model = Model(str(Path(yolov5.__file__).parent / "models" / "hub" / f"{arch}.yaml"), ch=3, nc=3)
    model.names = ["animal", "person", "vehicle"]
    torch.save({"model": model.float(), "epoch": -1}, str(pt))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scoring.export import export

    export(pt, onnx_path, name=f"md_random_{arch}")
params = sum(p.numel() for p in torch.load(str(pt), weights_only=False)["model"].parameters())
print(json.dumps({"pt": str(pt), "onnx": str(onnx_path), "arch": arch, "params": params,
                  "seconds": round(time.monotonic() - t0, 1)}))
