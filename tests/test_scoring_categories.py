"""Category ids follow the model manifest, and every class the model reports has one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scoring.demo_model import build_rect_model, draw_rect
from scoring.engine import Detector, ModelError, RunConfig, run


def _photo(folder: Path) -> Path:
    img = np.full((480, 640, 3), 90, np.uint8)
    draw_rect(img, "2", (0.25, 0.25, 0.3, 0.3))  # green: the model's class index 1
    folder.mkdir()
    Image.fromarray(img).save(folder / "a.jpg", quality=95)
    return folder


def test_zero_based_category_ids_from_the_manifest(tmp_path: Path) -> None:
    model = build_rect_model(tmp_path / "m.onnx")
    manifest = Path(str(model) + ".json")
    doc = json.loads(manifest.read_text())
    doc["categories"] = {"0": "animal", "1": "person", "2": "vehicle"}
    manifest.write_text(json.dumps(doc))
    out = tmp_path / "out.json"
    run(RunConfig(model=model, input=str(_photo(tmp_path / "photos")), output=str(out)))
    res = json.loads(out.read_text())
    cats = {d["category"] for im in res["images"] for d in im["detections"]}
    assert cats == {"1"} and res["detection_categories"]["1"] == "person"
    assert cats <= set(res["detection_categories"])


@pytest.mark.parametrize("categories", [{"1": "animal"}, {"one": "animal", "2": "person", "3": "x"},
                                        {"1": " ", "2": "person", "3": "vehicle"}])
def test_manifest_categories_must_cover_the_classes(tmp_path: Path, categories: dict) -> None:
    model = build_rect_model(tmp_path / "m.onnx")
    manifest = Path(str(model) + ".json")
    doc = json.loads(manifest.read_text())
    doc["categories"] = categories
    manifest.write_text(json.dumps(doc))
    with pytest.raises(ModelError):
        Detector(model)
