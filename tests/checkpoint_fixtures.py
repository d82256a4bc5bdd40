"""Checkpoints in each published MegaDetector layout, random weights, and MegaDetector's answer.

Two halves, because PyTorch lives in its own virtual environment (.venv-torch, made by
``.ci/torch-venv.sh``) while the tests and our scorer run in the main one:

- run as a script with the torch interpreter (stdlib imports only at the top, torch inside):
  ``build FAMILY OUT.pt`` writes a checkpoint the way the published one is laid out;
  ``reference PT IMAGES.json OUT.json`` scores images with the PyTorch model, loaded and pre/post-
  processed the way MegaDetector 10.0.x "classic" does it, with each family's own library
  functions (letterbox, NMS, scale_boxes).
- imported by the tests: :func:`torch_python` (fails clearly when the venv is missing),
  :func:`build`, :func:`export`, :func:`reference`, :func:`compare`.

Published layouts imitated: YOLOv5 repository pickles name top-level ``models.*`` classes
(``models.yolo.Model``, ``models.common.Conv``) and hold the model in fp16 inside YOLOv5's
stripped-optimizer dict; MDv1000 members add ``megadetector_info.json`` in the archive's one
top-level folder; Ultralytics checkpoints pickle ``ultralytics.*`` with their own dict keys; the
YOLOv9 (WongKinYiu) repository pickles ``models.*`` like YOLOv5. Detection-head biases are
spread so that random weights give boxes above 0.005 on every photo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PHOTOS = REPO_ROOT.parent / "shared" / "testdata" / "camera-traps"
MD_NAMES = ["animal", "person", "vehicle"]

#: family -> (published file name, library, architecture, megadetector_info.json or None)
FAMILIES: dict[str, tuple[str, str, str, dict[str, Any] | None]] = {
    "v5": ("md_v5a.0.0.pt", "yolov5", "hub/yolov5n6.yaml", None),
    "redwood": ("md_v1000.0.0-redwood.pt", "yolov5", "hub/yolov5n6.yaml",
                {"model_type": "yolov5", "image_size": 1280}),
    "spruce": ("md_v1000.0.0-spruce.pt", "yolov5", "yolov5n.yaml",
               {"model_type": "yolov5", "image_size": 640}),
    "cedar": ("md_v1000.0.0-cedar.pt", "yolov9", "gelan-tiny", {"model_type": "yolov9", "image_size": 640}),
    "larch": ("md_v1000.0.0-larch.pt", "ultralytics", "yolo11n.yaml",
              {"model_type": "ultralytics", "image_size": 640}),
    "sorrel": ("md_v1000.0.0-sorrel.pt", "ultralytics", "yolo11n.yaml",
               {"model_type": "ultralytics", "image_size": 960}),
}


# --------------------------------------------------------------------------------------------
# main-venv half (imported by the tests)
# --------------------------------------------------------------------------------------------

class TorchVenvMissing(RuntimeError):
    """The PyTorch virtual environment the checkpoint tests need is not there."""


def torch_python() -> Path:
    """The interpreter with the PyTorch extra: $MDBATCH_TORCH_PYTHON, else .venv-torch/bin/python."""
    env = os.environ.get("MDBATCH_TORCH_PYTHON")
    py = Path(env) if env else REPO_ROOT / ".venv-torch" / "bin" / "python"
    if not py.is_file():
        raise TorchVenvMissing(
            f"the checkpoint tests need the PyTorch extra's interpreter at {py}; create it with "
            "`bash .ci/torch-venv.sh` (CI does), or point MDBATCH_TORCH_PYTHON at one; "
            "MDBATCH_SKIP_TORCH_TESTS=1 skips these tests on purpose")
    return py


def torch_python_for_tests() -> Path:
    """:func:`torch_python` for a test: skipped only on purpose (MDBATCH_SKIP_TORCH_TESTS=1), a
    failure naming the fix when the interpreter is missing (never a silent skip)."""
    import pytest  # here: the torch-venv half of this file runs without pytest

    if os.environ.get("MDBATCH_SKIP_TORCH_TESTS") == "1":
        pytest.skip("MDBATCH_SKIP_TORCH_TESTS=1: PyTorch tests skipped on purpose")
    try:
        return torch_python()
    except TorchVenvMissing as e:
        pytest.fail(str(e))


def _run(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(torch_python()), *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{args[:2]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def build(family: str, folder: Path, seed: int = 0) -> Path:
    """A random-weight checkpoint of ``family`` in its published layout, under its published name."""
    out = folder / FAMILIES[family][0]
    if not out.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        _run([__file__, "build", family, str(out), str(seed)])
    return out


def export(pt: Path, onnx_path: Path, name: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m scoring.export`` in the torch venv (what ``mdbatch`` runs to convert)."""
    args = ["-m", "scoring.export", str(pt), "--output", str(onnx_path)]
    if name:
        args += ["--name", name]
    return _run(args)


def reference(pt: Path, images: list[Path], out: Path, threshold: float = 0.005) -> dict[str, list[dict]]:
    """MegaDetector-classic detections by file name, from the PyTorch model itself."""
    lst = out.with_suffix(".images.json")
    lst.write_text(json.dumps([str(p) for p in images]))
    _run([__file__, "reference", str(pt), str(lst), str(out), str(threshold)])
    return json.loads(out.read_text())


def compare(ref: dict[str, list[dict]], ours: dict[str, list[dict]], sizes: dict[str, tuple[int, int]],
            px_tol: float = 1.0, conf_tol: float = 0.001) -> dict[str, Any]:
    """Pair each reference box with one of ours (same category, closest); count what is left over
    (`scoring.parity.compare`, the benchmarks' matcher).

    Both sides round boxes to whole pixels and then truncate normalised coordinates to 4 decimals,
    so a coordinate sitting on a .5 pixel boundary (where float32 ORT and torch may round apart)
    shows up as ``px_tol`` plus at most one truncation step (1e-4 of the side); that much counts
    as the same box.
    """
    from scoring.parity import compare as match  # here: the torch-venv half runs without scoring

    p = match(ref, ours, sizes, conf_tol=conf_tol + 1e-9, window_px=px_tol + 1e-6, side_slack=1e-4)
    return {"boxes": p.boxes, "unmatched": p.unmatched, "max_px": round(p.max_px, 3),
            "max_conf": round(p.max_conf, 4)}


# --------------------------------------------------------------------------------------------
# torch-venv half (run as a script)
# --------------------------------------------------------------------------------------------

def _gelan_tiny() -> dict[str, Any]:
    """A small GELAN (YOLOv9) network from the yolov9 library's blocks, DDetect head, 3 classes."""
    return {
        "nc": 3, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": 3,
        "backbone": [
            [-1, 1, "Conv", [16, 3, 2]],                      # 0 P1/2
            [-1, 1, "Conv", [32, 3, 2]],                      # 1 P2/4
            [-1, 1, "RepNCSPELAN4", [32, 32, 16, 1]],         # 2
            [-1, 1, "ADown", [64]],                           # 3 P3/8
            [-1, 1, "RepNCSPELAN4", [64, 64, 32, 1]],         # 4
            [-1, 1, "ADown", [96]],                           # 5 P4/16
            [-1, 1, "RepNCSPELAN4", [96, 96, 48, 1]],         # 6
            [-1, 1, "ADown", [128]],                          # 7 P5/32
            [-1, 1, "RepNCSPELAN4", [128, 128, 64, 1]],       # 8
        ],
        "head": [
            [-1, 1, "SPPELAN", [128, 64]],                    # 9
            [-1, 1, "nn.Upsample", [None, 2, "nearest"]],     # 10
            [[-1, 6], 1, "Concat", [1]],                      # 11
            [-1, 1, "RepNCSPELAN4", [96, 96, 48, 1]],         # 12
            [-1, 1, "nn.Upsample", [None, 2, "nearest"]],     # 13
            [[-1, 4], 1, "Concat", [1]],                      # 14
            [-1, 1, "RepNCSPELAN4", [64, 64, 32, 1]],         # 15 (P3/8)
            [-1, 1, "ADown", [48]],                           # 16
            [[-1, 12], 1, "Concat", [1]],                     # 17
            [-1, 1, "RepNCSPELAN4", [96, 96, 48, 1]],         # 18 (P4/16)
            [-1, 1, "ADown", [64]],                           # 19
            [[-1, 9], 1, "Concat", [1]],                      # 20
            [-1, 1, "RepNCSPELAN4", [128, 128, 64, 1]],       # 21 (P5/32)
            [[15, 18, 21], 1, "DDetect", ["nc"]],             # 22
        ],
    }


def _calibration_tensor(name: str, size: int) -> Any:
    import numpy as np
    import torch
    from PIL import Image

    img = Image.open(PHOTOS / name).convert("RGB").resize((size, size * 3 // 4 // 64 * 64))
    return torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy())[None].float() / 255.0


def _spread_head_biases(model: Any, lib: str, size: int, gen: Any) -> None:
    """Shift the score channels' biases so a few percent of anchors score above 0.005, then spread.

    A random head gives either nothing above MegaDetector's 0.005 output threshold or saturates
    at 300 boxes; both would make the comparison weak. Each objectness / class output channel is
    shifted so that its 99.5th-percentile logit on a calibration photo lands on ``logit(0.02)``
    (yolov5: objectness at ``logit(0.015)``, classes centred at 0.5), plus a random offset in
    [-1, 1] so channels differ.
    """
    import math

    import torch

    det = model.model[-1]
    convs = list(det.m) if lib == "yolov5" else [seq[-1] for seq in det.cv3]
    seen: dict[int, Any] = {}
    hooks = [c.register_forward_hook(lambda mod, _i, out, k=k: seen.__setitem__(k, out.detach()))
             for k, c in enumerate(convs)]
    model.eval()
    with torch.no_grad():
        model(_calibration_tensor("sample-dzf-101.jpg", size))
    for h in hooks:
        h.remove()

    def logit(p: float) -> float:
        return math.log(p / (1 - p))

    with torch.no_grad():
        for k, conv in enumerate(convs):
            out = seen[k][0].flatten(1)  # [channels, H*W]
            if lib == "yolov5":
                no = out.shape[0] // det.na
                for a in range(det.na):
                    for c in range(no):
                        if c < 4:
                            continue
                        ch = a * no + c
                        target = logit(0.015) if c == 4 else 0.0
                        q = 0.995 if c == 4 else 0.5
                        jitter = float(torch.rand(1, generator=gen)) * 2 - 1
                        conv.bias[ch] += target - float(out[ch].quantile(q)) + jitter
            else:
                for ch in range(out.shape[0]):
                    jitter = float(torch.rand(1, generator=gen)) * 2 - 1
                    conv.bias[ch] += logit(0.02) - float(out[ch].quantile(0.995)) + jitter


def _calibrate_batchnorm(model: Any, size: int) -> None:
    """Set every BatchNorm's running statistics from two real photos (a data-dependent init).

    Random convolutions shrink activations layer after layer (to ~0 at a deep GELAN's head), so
    every anchor would give the same score; with normalised features the outputs vary per image
    and per anchor, as a trained model's do, and NMS and box scaling get exercised for real.
    """
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for name in ("sample-dzf-101.jpg", "sample-ufldwec-01.jpg"):
            model(_calibration_tensor(name, size))
    model.eval()


def _relabel_top_level(model: Any, prefix: str) -> list[tuple[type, str, str]]:
    """Make classes from ``prefix.models``/``prefix.utils`` pickle as top-level ``models.*`` names."""
    import importlib

    changed: list[tuple[type, str, str]] = []
    for cls in {type(m) for m in model.modules()}:
        mod = cls.__module__
        if mod.startswith(prefix + "."):
            top = mod[len(prefix) + 1:]
            pkg = top.split(".")[0]
            sys.modules.setdefault(pkg, importlib.import_module(prefix + "." + pkg))
            sys.modules.setdefault(top, importlib.import_module(mod))
            changed.append((cls, cls.__module__, cls.__qualname__))
            cls.__module__ = top
    for m in model.modules():  # YOLOv5 records each layer's class path as a string too
        if isinstance(getattr(m, "type", None), str) and m.type.startswith(prefix + "."):
            m.type = m.type[len(prefix) + 1:]
    return changed


def _add_info(pt: Path, info: dict[str, Any]) -> None:
    """megadetector_info.json into the archive's one top-level folder (where MegaDetector reads it)."""
    import zipfile

    with zipfile.ZipFile(pt, "a", compression=zipfile.ZIP_DEFLATED) as z:
        roots = {n.split("/", 1)[0] for n in z.namelist()}
        assert len(roots) == 1, roots
        z.writestr(f"{roots.pop()}/megadetector_info.json", json.dumps(info, indent=1))


def _build(family: str, out: Path, seed: int) -> None:
    import torch

    _filename, lib, arch, info = FAMILIES[family]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    if lib == "yolov5":
        import yolov5
        from yolov5.models.yolo import Model

        model = Model(str(Path(yolov5.__file__).parent / "models" / arch), ch=3, nc=3)
        _calibrate_batchnorm(model, 640)
        _spread_head_biases(model, lib, (info or {}).get("image_size", 1280), gen)
        model.names = list(MD_NAMES)
        changed = _relabel_top_level(model, "yolov5")
        model.__class__.__qualname__ = "Model"  # the older YOLOv5 the MDv5 files were written by
        ckpt = {"epoch": -1, "best_fitness": None, "model": model.half(), "ema": None, "updates": None,
                "optimizer": None, "wandb_id": None, "opt": {"imgsz": (info or {}).get("image_size", 1280)},
                "date": "2022-06-01T00:00:00"}
        try:
            torch.save(ckpt, str(out))
        finally:
            for cls, mod, qual in changed:
                cls.__module__, cls.__qualname__ = mod, qual
    elif lib == "yolov9":
        import yolov9

        root = str(Path(yolov9.__file__).resolve().parent)
        sys.path.insert(0, root)
        from models.yolo import DetectionModel  # the repository's own top-level names

        model = DetectionModel(_gelan_tiny(), ch=3, nc=3)
        _calibrate_batchnorm(model, 640)
        _spread_head_biases(model, lib, info["image_size"], gen)
        model.names = list(MD_NAMES)
        ckpt = {"epoch": -1, "best_fitness": None, "model": model.half(), "ema": None, "updates": None,
                "optimizer": None, "opt": {"imgsz": info["image_size"]}, "git": None,
                "date": "2024-06-01T00:00:00"}
        torch.save(ckpt, str(out))
    else:
        from ultralytics.nn.tasks import DetectionModel

        model = DetectionModel(arch, ch=3, nc=3, verbose=False)
        _calibrate_batchnorm(model, 640)
        _spread_head_biases(model, lib, info["image_size"], gen)
        model.names = dict(enumerate(MD_NAMES))
        import ultralytics

        ckpt = {"date": "2025-01-01T00:00:00", "version": ultralytics.__version__, "license": "AGPL-3.0",
                "docs": "https://docs.ultralytics.com", "epoch": -1, "best_fitness": None,
                "model": model.half(), "ema": None, "updates": None, "optimizer": None,
                "train_args": {"imgsz": info["image_size"], "task": "detect"}, "train_metrics": {},
                "train_results": {}}
        torch.save(ckpt, str(out))
    if info is not None:
        _add_info(out, {"metadata_format_version": 1.0,
                        "model_version_string": "v1000.0.0-" + family, **info})


def _truncate(x: float, digits: int) -> float:
    import math

    f = 10 ** digits
    return math.floor(x * f) / f


def _reference(pt: Path, images: list[str], out: Path, thres: float) -> None:
    """MegaDetector 10.0.x classic on the PyTorch model, with the family library's functions."""
    import zipfile

    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    info = None
    with zipfile.ZipFile(pt) as z:
        names = [n for n in z.namelist() if n.endswith("/megadetector_info.json")]
        if names:
            info = json.loads(z.read(names[0]))
    model_type = (info or {}).get("model_type", "yolov5")
    size = (info or {}).get("image_size", 1280)
    stride = 64 if size == 1280 else 32
    if model_type == "yolov5":
        import yolov5.models.yolo  # noqa: F401  (appends the package folder to sys.path, as MegaDetector relies on)
        from yolov5.utils.augmentations import letterbox
        from yolov5.utils.general import scale_boxes, xyxy2xywh
    elif model_type == "yolov9":
        import yolov9

        sys.path.insert(0, str(Path(yolov9.__file__).resolve().parent))
        from utils.augmentations import letterbox
        from utils.general import non_max_suppression, scale_boxes, xyxy2xywh
    else:
        from ultralytics.data.augment import LetterBox
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import scale_boxes, xyxy2xywh

        def letterbox(img: Any, new_shape: int, stride: int, auto: bool, scaleFill: bool,
                      scaleup: bool) -> tuple[Any, None, None]:
            lb = LetterBox(new_shape, auto=auto, scale_fill=scaleFill, scaleup=scaleup, center=True,
                           stride=stride)
            return lb(image=img), None, None
    ckpt = torch.load(str(pt), map_location="cpu", weights_only=False)
    model = ckpt["model"].float().fuse().eval()

    def md_nms(pred: Any) -> Any:
        """MegaDetector's classic NMS for YOLOv5 output: objectness x class, per-class torchvision NMS."""
        x = pred[pred[:, 4] > thres]
        if not len(x):
            return torch.zeros((0, 6))
        box = torch.cat([x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2], 1)
        conf, cls = (x[:, 5:] * x[:, 4:5]).max(1, keepdim=True)
        keep = conf.view(-1) > thres
        box, conf, cls = box[keep], conf[keep], cls[keep]
        parts = []
        for c in cls.unique():
            m = (cls == c).view(-1)
            k = torchvision.ops.nms(box[m], conf[m].view(-1), 0.45)
            parts.append(torch.cat([box[m][k], conf[m][k], cls[m][k].float()], 1))
        if not parts:
            return torch.zeros((0, 6))
        d = torch.cat(parts)
        return d[d[:, 4].argsort(descending=True)][:300]

    results: dict[str, list[dict]] = {}
    for path in images:
        img = np.asarray(Image.open(path).convert("RGB"))
        lb = letterbox(img, new_shape=size, stride=stride, auto=True, scaleFill=False, scaleup=True)[0]
        t = torch.from_numpy(np.ascontiguousarray(lb.transpose(2, 0, 1)))[None].float() / 255.0
        with torch.no_grad():
            pred = model(t)[0]
        if model_type == "yolov5":
            det = md_nms(pred[0])
        else:
            det = non_max_suppression(prediction=pred, conf_thres=thres, iou_thres=0.45, agnostic=False,
                                      multi_label=False)[0]
        dets = []
        if len(det):
            gn = torch.tensor(img.shape)[[1, 0, 1, 0]]
            det[:, :4] = scale_boxes(t.shape[2:], det[:, :4], img.shape).round()
            for *xyxy, conf, cls in reversed(det):
                if conf < thres:
                    continue
                xc, yc, w, h = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
                box = [xc - w / 2, yc - h / 2, w, h]
                dets.append({"category": str(int(cls) + 1), "conf": _truncate(float(conf), 3),
                             "bbox": [min(1.0, max(0.0, _truncate(v, 4))) for v in box]})
        dets.sort(key=lambda d: d["conf"], reverse=True)
        results[Path(path).name] = dets
    out.write_text(json.dumps(results))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "build":
        _build(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    elif cmd == "reference":
        _reference(Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text()), Path(sys.argv[4]),
                   float(sys.argv[5]) if len(sys.argv) > 5 else 0.005)
    else:
        raise SystemExit(f"unknown command {cmd!r}")
