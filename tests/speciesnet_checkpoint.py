"""A SpeciesNet "always crop" model folder with random weights, and SpeciesNet's own answer on it.

Run with the PyTorch interpreter (stdlib at the top, torch inside), from the tests:

- ``build FOLDER``: the layout the ``speciesnet`` package loads (``ModelInfo``): ``info.json``
  naming a whole pickled module (a ``torch.fx.GraphModule``, as the published checkpoint is a
  graph module converted from ONNX), ``labels.txt`` (line i = class i, taxonomy strings),
  ``taxonomy_release.txt`` and ``geofence_release.json``. The model takes NHWC [B, 480, 480, 3] in
  0..1 and answers logits, like the published one.
- ``reference FOLDER JOBS.json OUT_DIR``: for each ``[image, [bbox, ...]]`` the crops exactly as
  ``SpeciesNetClassifier.preprocess`` makes them (speciesnet 5.0.x: torchvision ``pil_to_tensor``,
  ``convert_image_dtype``, ``crop``, ``resize(antialias=False)``, back to uint8) and the softmax of
  the model on ``crop / 255``; crops saved as ``.npy``, scores in ``OUT_DIR/scores.json``.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

SPECIAL = [  # speciesnet.constants.Classification values the labels file carries
    "f1856211-cfb7-4a5b-9158-c0f72fd09ee6;;;;;;blank",
    "990ae9dd-7a59-4344-afcb-1b7b21368000;mammalia;primates;hominidae;homo;sapiens;human",
    "e2895ed5-780b-48f6-8a11-9e27cb594511;;;;;;vehicle",
]
SPECIES = ["mammalia;carnivora;canidae;vulpes;vulpes;red fox",
           "mammalia;carnivora;canidae;canis;lupus;gray wolf",
           "mammalia;cetartiodactyla;cervidae;cervus;canadensis;elk",
           "aves;galliformes;phasianidae;phasianus;colchicus;common pheasant",
           "mammalia;carnivora;ursidae;ursus;americanus;american black bear"]
HIGHER = ["mammalia;carnivora;canidae;;;canine family", "mammalia;carnivora;;;;carnivorous mammal",
          "mammalia;;;;;mammal", "1f689929-883d-4dae-958c-3d57ab5b6c16;;;;;;animal"]


def _uuid(t: str) -> str:
    return f"{uuid.uuid5(uuid.NAMESPACE_URL, 'mdbatch-sn-test/' + t)};{t}"


def labels() -> list[str]:
    return SPECIAL + [_uuid(t) for t in SPECIES]


def build(folder: Path) -> None:
    import torch
    from torch import nn

    class Crops(nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 5, stride=4, padding=2)
            self.conv2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(16, n)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.permute(0, 3, 1, 2)  # the published model takes NHWC too
            x = torch.relu(self.conv(x))
            x = torch.relu(self.conv2(x))
            return self.head(torch.flatten(self.pool(x), 1)) * 4.0

    torch.manual_seed(12)
    labs = labels()
    gm = torch.fx.symbolic_trace(Crops(len(labs)).eval())
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(gm, folder / "always_crop_test_v4.0.1a.pt")
    (folder / "labels.txt").write_text("\n".join(labs) + "\n", encoding="utf-8")
    taxonomy = labs + [_uuid(t) if t.count(";") != 6 else t for t in HIGHER]
    (folder / "taxonomy_release.txt").write_text("\n".join(taxonomy) + "\n", encoding="utf-8")
    geofence = {"mammalia;carnivora;canidae;vulpes;vulpes": {"allow": {"GBR": []}}}
    (folder / "geofence_release.json").write_text(json.dumps(geofence), encoding="utf-8")
    info = {"version": "4.0.1a-test", "type": "always_crop", "classifier": "always_crop_test_v4.0.1a.pt",
            "classifier_labels": "labels.txt", "detector": "https://example.invalid/md_v5a.0.0.pt",
            "taxonomy": "taxonomy_release.txt", "geofence": "geofence_release.json"}
    (folder / "info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")


def reference(folder: Path, jobs_path: Path, out_dir: Path) -> None:
    import numpy as np
    import PIL.Image
    import PIL.ImageOps
    import torch
    import torchvision.transforms.functional as F

    info = json.loads((folder / "info.json").read_text())
    model = torch.load(folder / info["classifier"], map_location="cpu", weights_only=False).eval()
    labs = (folder / info["classifier_labels"]).read_text().splitlines()
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = []
    k = 0
    for image, boxes in json.loads(jobs_path.read_text()):
        img = PIL.ImageOps.exif_transpose(PIL.Image.open(image).convert("RGB"))
        t = F.convert_image_dtype(F.pil_to_tensor(img), torch.float32)
        for x, y, w, h in boxes:
            crop = F.crop(t, int(y * img.height), int(x * img.width), int(h * img.height), int(w * img.width))
            crop = F.resize(crop, [480, 480], antialias=False)
            crop = F.convert_image_dtype(crop, torch.uint8).permute([1, 2, 0]).numpy()
            np.save(out_dir / f"crop{k}.npy", crop)
            with torch.no_grad():
                logits = model(torch.from_numpy(np.stack([crop / 255.0], axis=0, dtype=np.float32)))
            p = torch.softmax(logits, dim=-1)[0]
            top = torch.topk(p, k=5)
            scores.append({"classes": [labs[i] for i in top.indices.tolist()], "scores": top.values.tolist()})
            k += 1
    (out_dir / "scores.json").write_text(json.dumps(scores))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "build":
        build(Path(sys.argv[2]))
    elif cmd == "reference":
        reference(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        sys.exit(f"unknown command {cmd}")
