"""Runs in bench/.peer-venv: a random-weight YOLOv5s6 (3 classes), saved as the .pt MegaDetector
loads, and the same weights exported to ONNX with scoring.export (opset 17, dynamic B/H/W)."""

import sys
from pathlib import Path

import torch
import yolov5
from yolov5.models.yolo import Model

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
cfg = Path(yolov5.__file__).parent / "models" / "hub" / "yolov5s6.yaml"
model = Model(str(cfg), ch=3, nc=3)
model.names = ["animal", "person", "vehicle"]
pt = out / "md_random_s6.pt"
torch.save({"model": model.float(), "epoch": -1}, str(pt))

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scoring.export import export  # noqa: E402

onnx_path = export(pt, out / "md_random_s6.onnx", name="md_random_s6")
print(pt, onnx_path)
