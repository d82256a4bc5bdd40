"""Random-weight YOLO-shaped models: dynamic shapes, batching, both output layouts, NMS rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scoring.engine import Detector, RunConfig, run
from scoring.postprocess import nms_indices, select, to_detections
from tests.scoring_fixtures import (  # noqa: F401
    by_file,
    gradient_image,
    load_results,
    model_dir,
    random_models,
    save,
)

SIZES = [(320, 240), (240, 320), (500, 200), (320, 240), (256, 256), (240, 320), (320, 240), (100, 700)]


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(7)
    for i, (w, h) in enumerate(SIZES):
        img = (gradient_image(w, h, seed=i).astype(np.int16) + rng.integers(-60, 60, (h, w, 3)))
        save(np.clip(img, 0, 255).astype(np.uint8), d / f"img{i:02d}.png")
    return d


@pytest.mark.parametrize("layout", ["yolov5", "ultralytics"])
def test_batching_gives_same_results(tmp_path: Path, shapes_dir: Path, layout: str,
                                     random_models: dict[str, Path]) -> None:  # noqa: F811
    det = Detector(random_models[layout])
    outs = {}
    for bs in (1, 3, 8):
        out = tmp_path / f"b{bs}.json"
        stats = run(RunConfig(model=random_models[layout], input=str(shapes_dir), output=str(out),
                              batch_size=bs, workers=3), detector=det)
        assert stats.scored == len(SIZES)
        outs[bs] = load_results(out)["images"]
        if bs == 8:
            # same-shaped images share a batch: 4 shapes (+1 for the odd one) -> far fewer runs than images
            assert stats.batches < len(SIZES)
    assert outs[1] == outs[3] == outs[8]
    n_boxes = 0
    for e in outs[1]:
        assert e["detections"] is not None
        assert len(e["detections"]) <= 300
        for d in e["detections"]:
            n_boxes += 1
            assert d["category"] in {"1", "2", "3"}
            assert 0.005 <= d["conf"] <= 1
            x, y, w, h = d["bbox"]
            assert 0 <= x <= 1 and 0 <= y <= 1 and 0 <= w <= 1 and 0 <= h <= 1
            assert x + w <= 1.0001 and y + h <= 1.0001
        confs = [d["conf"] for d in e["detections"]]
        assert confs == sorted(confs, reverse=True)
    assert n_boxes >= len(SIZES)  # random weights: boxes on every image


@pytest.mark.parametrize("layout", ["yolov5", "ultralytics"])
def test_dynamic_shapes_in_session(random_models: dict[str, Path], layout: str) -> None:  # noqa: F811
    det = Detector(random_models[layout])
    nout = 8 if layout == "yolov5" else 7
    for b, h, w in [(1, 256, 192), (3, 128, 256), (2, 64, 64)]:
        pred = det.infer(np.random.default_rng(0).random((b, 3, h, w), dtype=np.float32))
        n = (h // 32) * (w // 32)
        assert pred.shape == ((b, n, nout) if layout == "yolov5" else (b, nout, n))


def test_layouts_agree_on_equivalent_outputs() -> None:
    """The same boxes given in both layouts give the same detections (no objectness = 1)."""
    rng = np.random.default_rng(1)
    n = 400
    xy = rng.uniform(0, 640, (n, 2))
    wh = rng.uniform(5, 120, (n, 2))
    cls = rng.uniform(0, 1, (n, 3)) ** 3
    v5 = np.concatenate([xy, wh, np.ones((n, 1)), cls], axis=1).astype(np.float32)
    ul = np.concatenate([xy, wh, cls], axis=1).T.astype(np.float32)
    a = to_detections(select(v5, "yolov5", 0.005), (640, 640), (480, 480), 0.005, ["1", "2", "3"])
    b = to_detections(select(ul, "ultralytics", 0.005), (640, 640), (480, 480), 0.005, ["1", "2", "3"])
    assert a == b and 0 < len(a) <= 300


def test_nms_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = 60
        xy = rng.uniform(0, 100, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], axis=1).astype(np.float32)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        keep = set(nms_indices(boxes, scores, 0.45).tolist())
        # brute force: a box survives iff no higher-scored survivor overlaps it with IoU > 0.45
        survivors: list[int] = []
        for i in np.argsort(-scores, kind="stable"):
            ok = True
            for j in survivors:
                xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
                xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
                inter = max(0, xx2 - xx1) * max(0, yy2 - yy1)
                ai = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
                aj = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
                if inter / (ai + aj - inter) > 0.45:
                    ok = False
                    break
            if ok:
                survivors.append(int(i))
        assert keep == set(survivors)


def test_max_300_and_per_class_nms() -> None:
    # 400 identical boxes in class 0 collapse to one; 400 disjoint boxes are capped at 300
    same = np.tile(np.array([[50, 50, 20, 20, 0.9, 1, 0, 0]], np.float32), (400, 1))
    grid = np.array([[10 + 30 * (i % 20), 10 + 30 * (i // 20), 10, 10, 0.5, 0, 1, 0] for i in range(400)],
                    np.float32)
    det = select(np.concatenate([same, grid]), "yolov5", 0.005)
    assert len(det) == 300
    assert int((det[:, 5] == 0).sum()) == 1  # class 0 collapsed by NMS, class 1 untouched by it
    assert det[0, 4] == np.float32(0.9)
