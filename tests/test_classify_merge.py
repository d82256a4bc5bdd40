"""The aggregate step carries a classifier's fields from the shard results into the published file."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from batch.merge import merge_shards
from scoring.classifier_demo import build_colour_classifier
from scoring.demo_model import draw_rect
from scoring.engine import RunConfig, run
from tests.scoring_fixtures import gradient_image, model_dir, rect_model, save  # noqa: F401


def _merge(results: list[bytes | None], manifests: list[list[str]], failed: dict[int, str]) -> dict:
    det, fail, imgs = io.StringIO(), io.StringIO(), io.StringIO()
    merge_shards(len(manifests), read_manifest=lambda s: json.dumps({"images": manifests[s]}).encode(),
                 read_result=lambda s: results[s], failed_shards=failed, detections_out=det,
                 failed_out=fail, images_out=imgs, now=datetime(2026, 12, 3, 12, 0, tzinfo=UTC))
    return json.loads(det.getvalue())


def test_merge_carries_classification_fields(tmp_path: Path, rect_model: Path, model_dir: Path) -> None:  # noqa: F811
    clf = build_colour_classifier(model_dir / "merge-colours.onnx", crop_categories=["1", "3"])
    manifests: list[list[str]] = []
    results: list[bytes | None] = []
    for s in range(3):
        names = []
        for i in range(2):
            img = gradient_image(320, 240, seed=10 * s + i)
            draw_rect(img, "1" if i == 0 else "3", (0.2, 0.2, 0.4, 0.4))
            names.append(str(save(img, tmp_path / f"s{s}" / f"{i}.png")))
        lst = tmp_path / f"s{s}.json"
        lst.write_text(json.dumps(names))
        out = tmp_path / f"r{s}.json"
        run(RunConfig(model=rect_model, input=str(lst), output=str(out), classifier=clf))
        manifests.append(sorted(names))
        results.append(out.read_bytes())
    shard0 = json.loads(results[0] or b"")
    merged = _merge(results, manifests, {1: "preempted too often"})
    assert list(merged) == ["info", "detection_categories", "classification_categories",
                            "classification_category_descriptions", "images"]
    assert merged["classification_categories"] == shard0["classification_categories"]
    assert merged["classification_category_descriptions"] == shard0["classification_category_descriptions"]
    assert merged["info"]["classifier"] == "merge-colours"
    assert merged["info"]["classification_completion_time"] == "2026-12-03 12:00:00"
    assert merged["info"]["classifier_metadata"] == shard0["info"]["classifier_metadata"]
    by = {e["file"]: e for e in merged["images"]}
    for s in (0, 2):
        red, blue = (by[n]["detections"] for n in manifests[s])
        assert red[0]["classifications"][0][0] == "0"  # fox
        assert blue[0]["classifications"][0][0] == "2"  # elk
    assert all(by[n]["failure"].startswith("shard failed") for n in manifests[1])
    # the header comes from the first readable shard, whichever that is
    merged = _merge([None, results[1], results[2]], manifests, {0: "gone"})
    assert merged["classification_categories"] == shard0["classification_categories"]


def test_merge_without_classifier_has_no_classification_fields(tmp_path: Path, rect_model: Path) -> None:  # noqa: F811
    img = gradient_image(320, 240)
    draw_rect(img, "1", (0.2, 0.2, 0.4, 0.4))
    p = save(img, tmp_path / "a.png")
    lst = tmp_path / "l.json"
    lst.write_text(json.dumps([str(p)]))
    run(RunConfig(model=rect_model, input=str(lst), output=str(tmp_path / "r.json")))
    merged = _merge([(tmp_path / "r.json").read_bytes()], [[str(p)]], {})
    assert list(merged) == ["info", "detection_categories", "images"]
    assert "classifier" not in merged["info"] and "classification_completion_time" not in merged["info"]
    assert np.isclose(merged["images"][0]["detections"][0]["conf"], 0.875)
