"""Runs with the PyTorch interpreter: random-weight models of the real sizes, exported to ONNX.

- ``detector OUT.onnx``: YOLOv5x6 (MegaDetector v5's architecture, ~140 M parameters), 3 classes,
  exported by ``scoring.export`` (opset 17, dynamic B/H/W) with its manifest.
- ``classifier OUT.onnx``: EfficientNetV2-M (SpeciesNet v4's architecture family, at SpeciesNet's
  480 x 480), NHWC input like SpeciesNet's checkpoint, 2,498 classes, with a classifier manifest
  (SpeciesNet crop rule, every detection category cropped at >= 0.1).
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scoring.manifest import file_sha256

N_CLASSES = 2498


def detector(out: Path) -> None:
    import yolov5
    from yolov5.models.yolo import Model

    from scoring.export import export

    torch.manual_seed(0)
    model = Model(str(Path(yolov5.__file__).parent / "models" / "hub" / "yolov5x6.yaml"), ch=3, nc=3)
    model.names = ["animal", "person", "vehicle"]
    model = model.float().fuse().eval()
    export(out.with_suffix(".pt"), out, model=model, name=out.stem)


class Nhwc(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


def classifier(out: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    model = Nhwc(torchvision.models.efficientnet_v2_m(weights=None, num_classes=N_CLASSES)).eval()
    dummy = torch.zeros(1, 480, 480, 3)
    with torch.no_grad():
        torch.onnx.export(model, (dummy,), str(out), input_names=["crops"], output_names=["logits"],
                          opset_version=17, dynamo=False, dynamic_axes={"crops": {0: "batch"},
                                                                        "logits": {0: "batch"}})
    labels = [f"bench-{i:04d};mammalia;order{i % 30};family{i % 200};genus{i};species{i};class {i}"
              for i in range(N_CLASSES)]
    manifest = {"format": "mdbatch-classifier/1", "name": out.stem, "classifier": out.stem,
                "input_size": 480, "layout": "nhwc", "crop": "speciesnet", "output": "logits",
                "labels": labels, "crop_categories": ["1", "2", "3"], "crop_threshold": 0.1,
                "top_k": 5, "sha256": file_sha256(out)}
    Path(str(out) + ".json").write_text(json.dumps(manifest), encoding="utf-8")


if __name__ == "__main__":
    {"detector": detector, "classifier": classifier}[sys.argv[1]](Path(sys.argv[2]))
    print(sys.argv[2])
