"""What a MegaDetector ``.pt`` is, read the way MegaDetector reads it, without torch.

Sources, in MegaDetector's order of trust (``megadetector.detection.run_detector`` and
``pytorch_detector``, 10.0.x):

- ``megadetector_info.json`` in the checkpoint archive's one top-level folder: ``model_type``
  (``yolov5`` | ``yolov9`` | ``ultralytics``), ``image_size``, ``model_version_string``;
- the ``known_models`` table, looked up by the version in the file, else by a version string in
  the file name (``md_v5a.0.0.pt``, ``md_v1000.0.0-redwood.pt``, ``mdv1000-sorrel``...);
- defaults: model type ``yolov5``, image size 1280.

Stride follows MegaDetector's preprocessing rule, not the network: 64 for 1280-pixel models
(the YOLOv5*6 family), 32 otherwise.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

MODEL_TYPES = ("yolov5", "yolov9", "ultralytics")
INFO_NAME = "megadetector_info.json"


@dataclass(frozen=True)
class KnownVersion:
    """One row of MegaDetector's ``run_detector.known_models`` (PyTorch models only)."""

    model_type: str | None = None
    image_size: int | None = None
    typical: float | None = None
    conservative: float | None = None


KNOWN_VERSIONS: dict[str, KnownVersion] = {
    "v5a.0.0": KnownVersion("yolov5", 1280, 0.2, 0.05),
    "v5b.0.0": KnownVersion("yolov5", 1280, 0.2, 0.05),
    "v5a.0.1": KnownVersion("yolov5", 1280, 0.2, 0.05),
    "v5b.0.1": KnownVersion("yolov5", 1280, 0.2, 0.05),
    "v1000.0.0-redwood": KnownVersion(typical=0.3),
    "v1000.0.0-spruce": KnownVersion(),
    "v1000.0.0-larch": KnownVersion(),
    "v1000.0.0-cedar": KnownVersion(),
    "v1000.0.0-sorrel": KnownVersion(),
}

# MegaDetector's defaults where neither the file nor the table says (its "unknown detector"
# metadata: typical 0.2, conservative 0.1).
DEFAULT_TYPICAL = 0.2
DEFAULT_CONSERVATIVE = 0.1
DEFAULT_IMAGE_SIZE = 1280
DEFAULT_MODEL_TYPE = "yolov5"

# file-name fragments -> version (MegaDetector's model_string_to_model_version, lower case);
# longest first so "v5a.0.0" wins over "v5a".
_NAME_TO_VERSION = {
    "mdv5a": "v5a.0.1", "mdv5b": "v5b.0.1",
    "v5a.0.0": "v5a.0.1", "v5b.0.0": "v5b.0.1", "v5a.0.1": "v5a.0.1", "v5b.0.1": "v5b.0.1",
    **{f"{prefix}-{tree}": f"v1000.0.0-{tree}"
       for prefix in ("md1000", "mdv1000", "v1000", "v1000.0.0")
       for tree in ("redwood", "cedar", "larch", "sorrel", "spruce")},
}


class CheckpointError(ValueError):
    """A file that is not a MegaDetector checkpoint we can read (message names the problem)."""


@dataclass(frozen=True)
class CheckpointFacts:
    """Everything the exporter and the manifest need to know before unpickling."""

    model_type: str  # yolov5 | yolov9 | ultralytics
    image_size: int
    stride: int
    version: str | None
    typical: float
    conservative: float
    info: dict | None  # megadetector_info.json as read, None when absent

    @property
    def layout(self) -> str:
        """The manifest layout: how the raw output reads and how boxes scale back.

        ``yolov5``: [B, N, 5+nc] with objectness, YOLOv5 box scaling. ``ultralytics`` (YOLO11):
        [B, 4+nc, N], ultralytics box scaling (whole-pixel pads). ``yolov9``: the same anchor-free
        output, but the yolov9 library scales boxes the YOLOv5 way (fractional pads, one gain).
        """
        return self.model_type


def read_info(pt_path: Path) -> dict | None:
    """``megadetector_info.json`` from the archive's one top-level folder, or None.

    Raises :class:`CheckpointError` when the file is not a zip archive (a legacy or damaged
    checkpoint), since nothing else about it can then be trusted either.
    """
    try:
        with zipfile.ZipFile(pt_path) as z:
            names = z.namelist()
            roots = {n.split("/", 1)[0] for n in names}
            if len(roots) != 1:
                return None
            member = f"{roots.pop()}/{INFO_NAME}"
            if member not in names:
                return None
            try:
                data = json.loads(z.read(member).decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{pt_path.name}: {INFO_NAME} is not valid JSON ({e})") from None
    except zipfile.BadZipFile:
        raise CheckpointError(f"{pt_path.name} is not a PyTorch checkpoint archive (not a zip file)"
                              ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{pt_path.name}: {INFO_NAME} must hold a JSON object")
    return data


def version_from_name(name: str) -> str | None:
    """Version string from a file name, like MegaDetector's get_detector_version_from_filename."""
    low = Path(name).name.lower()
    for frag in sorted(_NAME_TO_VERSION, key=len, reverse=True):
        if frag in low:
            return _NAME_TO_VERSION[frag]
    return None


def stride_for(image_size: int) -> int:
    """MegaDetector's letterbox stride: 64 only for 1280-pixel models."""
    return 64 if image_size == 1280 else 32


def read_facts(pt_path: Path, name: str | None = None) -> CheckpointFacts:
    """Facts for ``pt_path``; ``name`` (e.g. the known model's file name) overrides the file name."""
    pt_path = Path(pt_path)
    info = read_info(pt_path)
    version = None
    if info and isinstance(info.get("model_version_string"), str):
        version = info["model_version_string"]
    version = version or version_from_name(name or pt_path.name)
    known = KNOWN_VERSIONS.get(version or "", KnownVersion())
    # MegaDetector trusts the table over the file when both give a model type ("table" default)
    model_type = known.model_type or (info or {}).get("model_type") or DEFAULT_MODEL_TYPE
    if model_type not in MODEL_TYPES:
        raise CheckpointError(f"{pt_path.name}: unknown model_type {model_type!r} in {INFO_NAME}; "
                              f"expected one of {', '.join(MODEL_TYPES)}")
    raw_size = (info or {}).get("image_size", known.image_size or DEFAULT_IMAGE_SIZE)
    if isinstance(raw_size, bool) or not isinstance(raw_size, int) or raw_size <= 0:
        raise CheckpointError(f"{pt_path.name}: image_size in {INFO_NAME} must be a positive integer, "
                              f"got {raw_size!r}")
    return CheckpointFacts(
        model_type=model_type, image_size=raw_size, stride=stride_for(raw_size), version=version,
        typical=known.typical if known.typical is not None else DEFAULT_TYPICAL,
        conservative=known.conservative if known.conservative is not None else DEFAULT_CONSERVATIVE,
        info=info,
    )
