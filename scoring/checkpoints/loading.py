"""Unpickle a published MegaDetector checkpoint with the library its family needs (needs torch).

- ``yolov5`` (MDv5a/b, MDv1000-redwood/-spruce): the files pickle the YOLOv5 repository's
  top-level module names (``models.yolo.Model``, ``models.common.Conv``...). MegaDetector gets
  them resolved because importing the ``yolov5`` package's model module appends that package's
  folder to ``sys.path``. We alias instead, inside the unpickler only: ``models.*`` and
  ``utils.*`` resolve to ``yolov5.models.*`` / ``yolov5.utils.*``, so one copy of each class
  exists and ``fuse()`` recognises every layer. No global import state is changed.
- ``yolov9`` (MDv1000-cedar, WongKinYiu YOLOv9): the ``yolov9pip`` package's own modules import
  each other by the top-level names (``models.common``), so the package folder goes first on
  ``sys.path`` (what importing it does anyway) and the pickle's names resolve as published.
- ``ultralytics`` (MDv1000-larch, -sorrel: YOLO11): the pickle names ``ultralytics.*`` itself.

Then, like MegaDetector's ``PTDetector._load_model``: ``checkpoint['model']``, the Upsample
compatibility fix, ``float().fuse().eval()``.
"""

from __future__ import annotations

import importlib
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from .facts import CheckpointError, CheckpointFacts

# model type -> (import name, pip name) of the library whose classes the pickle names
LIBRARIES = {"yolov5": ("yolov5", "yolov5"), "yolov9": ("yolov9", "yolov9pip"),
             "ultralytics": ("ultralytics", "ultralytics")}
_YOLOV5_ALIASES = ("models", "utils")


class _Yolov5Unpickler(pickle.Unpickler):
    """Resolves the YOLOv5 repository's top-level names to the ``yolov5`` package's modules."""

    def find_class(self, module: str, name: str) -> Any:
        top = module.split(".", 1)[0]
        if top in _YOLOV5_ALIASES:
            module = "yolov5." + module
        return super().find_class(module, name)


_YOLOV5_PICKLE = SimpleNamespace(Unpickler=_Yolov5Unpickler, load=pickle.load, __name__="yolov5_pickle")


def _require(model_type: str, pt_name: str) -> None:
    mod, pip_name = LIBRARIES[model_type]
    try:
        importlib.import_module(mod)
    except ModuleNotFoundError as e:
        raise CheckpointError(
            f"{pt_name} is a {model_type} checkpoint and unpickling it needs the {pip_name} package "
            f"({e}); install the PyTorch extra: pip install -r requirements-torch.txt") from None
    if model_type == "yolov9":
        # yolov9pip's modules import each other as top-level ``models``/``utils``: its folder must
        # come before anything else of those names.
        root = str(Path(importlib.import_module(mod).__file__).resolve().parent)
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)
        importlib.import_module("models.yolo")


def load_model(pt_path: Path, facts: CheckpointFacts) -> Any:
    """The checkpoint's detection model, float32, fused, in eval mode."""
    pt_path = Path(pt_path)
    _require(facts.model_type, pt_path.name)
    kwargs: dict[str, Any] = {"map_location": "cpu", "weights_only": False}
    if facts.model_type == "yolov5":
        kwargs["pickle_module"] = _YOLOV5_PICKLE
    try:
        ckpt = torch.load(str(pt_path), **kwargs)
    except ModuleNotFoundError as e:
        lib = LIBRARIES[facts.model_type][1]
        raise CheckpointError(
            f"{pt_path.name} names a module that is not installed ({e}); it is read as a "
            f"{facts.model_type} checkpoint with the {lib} package (the PyTorch extra: "
            "pip install -r requirements-torch.txt)") from None
    except (AttributeError, pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{pt_path.name} cannot be unpickled as a {facts.model_type} checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    model = ckpt.get("model") if isinstance(ckpt, dict) else ckpt
    if model is None and isinstance(ckpt, dict):
        model = ckpt.get("ema")
    if not isinstance(model, torch.nn.Module):
        raise CheckpointError(f"{pt_path.name} holds no model (expected a 'model' entry with the network)")
    for m in model.modules():  # MegaDetector's compatibility fix for older YOLOv5 pickles
        if type(m) is torch.nn.Upsample and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
    model = model.float()
    if hasattr(model, "fuse"):
        model = model.fuse()
    return model.eval()
