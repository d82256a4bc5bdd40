"""What a checkpoint is, read without torch: metadata in the archive, MegaDetector's table, names."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from scoring.checkpoints.facts import CheckpointError, read_facts, stride_for, version_from_name


def _archive(path: Path, info: dict | str | None = None, root: str | None = None) -> Path:
    """A zip laid out like torch.save's: one top-level folder, data.pkl, optional metadata."""
    root = root or path.stem
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{root}/data.pkl", b"\x80\x02}q\x00.")
        z.writestr(f"{root}/version", "3\n")
        if info is not None:
            z.writestr(f"{root}/megadetector_info.json", info if isinstance(info, str) else json.dumps(info))
    return path


def test_mdv5_without_metadata_is_a_1280_yolov5_model(tmp_path: Path) -> None:
    f = read_facts(_archive(tmp_path / "md_v5a.0.0.pt"))
    assert (f.model_type, f.image_size, f.stride, f.layout) == ("yolov5", 1280, 64, "yolov5")
    assert (f.typical, f.conservative, f.version) == (0.2, 0.05, "v5a.0.1")


@pytest.mark.parametrize(("name", "info", "want"), [
    ("md_v1000.0.0-redwood.pt", {"model_type": "yolov5", "image_size": 1280}, ("yolov5", 1280, 64, 0.3)),
    ("md_v1000.0.0-spruce.pt", {"model_type": "yolov5", "image_size": 640}, ("yolov5", 640, 32, 0.2)),
    ("md_v1000.0.0-cedar.pt", {"model_type": "yolov9", "image_size": 640}, ("yolov9", 640, 32, 0.2)),
    ("md_v1000.0.0-larch.pt", {"model_type": "ultralytics", "image_size": 640},
     ("ultralytics", 640, 32, 0.2)),
    ("md_v1000.0.0-sorrel.pt", {"model_type": "ultralytics", "image_size": 960},
     ("ultralytics", 960, 32, 0.2)),
])
def test_mdv1000_members_take_their_facts_from_the_file(tmp_path: Path, name: str, info: dict,
                                                        want: tuple) -> None:
    f = read_facts(_archive(tmp_path / name, info))
    assert (f.model_type, f.image_size, f.stride, f.typical) == want
    assert f.info == info


def test_version_in_the_metadata_wins_over_the_file_name(tmp_path: Path) -> None:
    info = {"model_type": "yolov5", "image_size": 1280, "metadata_format_version": 1.0,
            "model_version_string": "v1000.0.0-redwood"}
    f = read_facts(_archive(tmp_path / "renamed.pt", info))
    assert (f.version, f.typical) == ("v1000.0.0-redwood", 0.3)
    # an unknown file without metadata: MegaDetector's defaults
    g = read_facts(_archive(tmp_path / "custom.pt"))
    got = (g.version, g.model_type, g.image_size, g.typical, g.conservative)
    assert got == (None, "yolov5", 1280, 0.2, 0.1)


def test_names_and_strides_follow_megadetector() -> None:
    assert version_from_name("/x/md_v5b.0.0.pt") == "v5b.0.1"
    assert version_from_name("MDV1000-SORREL.pt") == "v1000.0.0-sorrel"
    assert version_from_name("yolo11n.pt") is None
    assert [stride_for(s) for s in (1280, 960, 640)] == [64, 32, 32]


@pytest.mark.parametrize(("info", "match"), [
    ("{not json", "not valid JSON"),
    ({"model_type": "yolov7", "image_size": 640}, "unknown model_type 'yolov7'"),
    ({"model_type": "yolov5", "image_size": "big"}, "image_size"),
    ([1, 2], "JSON object"),
])
def test_bad_metadata_is_refused_with_the_reason(tmp_path: Path, info: object, match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        read_facts(_archive(tmp_path / "md_v1000.0.0-spruce.pt",
                            info if isinstance(info, str | dict) else json.dumps(info)))


def test_a_file_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "md_v5a.0.0.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a zip file"):
        read_facts(bad)
