"""The classification stage of a shard job: colour rectangles on the shared photos, the rectangle
detector plus the colour classifier (both built here), each box's species and the format fields."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scoring.classifier import Classifier, top_classes
from scoring.classifier_demo import COLOURS, build_colour_classifier, taxonomy_labels
from scoring.crops import crop_pixels, crop_u8
from scoring.demo_model import draw_rect
from scoring.engine import Interrupted, RunConfig, run
from tests.conftest import REPO_ROOT
from tests.scoring_fixtures import CLEAN_PHOTOS, by_file, load_results, model_dir, rect_model, save  # noqa: F401

# detection category -> (colour the rect detector sees as that category, box)
BOXES = {"1": ("red", (0.10, 0.15, 0.20, 0.25)), "2": ("green", (0.55, 0.10, 0.30, 0.20)),
         "3": ("blue", (0.40, 0.60, 0.25, 0.30))}
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


@pytest.fixture(scope="module")
def colour_all(model_dir: Path) -> Path:  # noqa: F811
    """Classifies every detection category (so red, green and blue boxes all get a species)."""
    return build_colour_classifier(model_dir / "colours-all.onnx", crop_categories=["1", "2", "3"])


@pytest.fixture(scope="module")
def colour_animals(model_dir: Path) -> Path:  # noqa: F811
    """The default rule: animal detections only."""
    return build_colour_classifier(model_dir / "colours.onnx")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, camera_trap_dir: Path) -> Path:
    src = tmp_path_factory.mktemp("planted")
    for p in sorted(camera_trap_dir.glob("*.jpg")):
        img = np.asarray(Image.open(p).convert("RGB")).copy()
        # red only on the photos without red annotation boxes (SOURCES.md)
        for cat in (["1", "2", "3"] if p.name in CLEAN_PHOTOS else ["2", "3"]):
            draw_rect(img, cat, BOXES[cat][1])
        save(img, src / f"{p.stem}.png")
    return src


def _run(tmp_path: Path, model: Path, src: Path, classifier: Path | None, name: str = "out.json",
         **kw: Any) -> dict[str, Any]:
    out = tmp_path / name
    run(RunConfig(model=model, input=str(src), output=str(out), classifier=classifier, **kw))
    return load_results(out)


def _clean(file: str) -> bool:
    return file.removesuffix(".png") + ".jpg" in CLEAN_PHOTOS


def _check_classifications(cls: list[list[Any]], expected_top: str, n_labels: int) -> None:
    assert len(cls) == 5, cls
    assert cls[0][0] == expected_top, cls
    confs = [c for _, c in cls]
    assert confs == sorted(confs, reverse=True), cls
    assert all(isinstance(i, str) and 0 <= int(i) < n_labels for i, _ in cls)
    assert all(isinstance(c, float) and 0.0 <= c <= 1.0 for c in confs)
    assert len({i for i, _ in cls}) == 5
    assert cls[0][1] > 0.9  # a pure colour is a confident answer


def test_each_box_named_by_its_colour_and_format_fields(tmp_path: Path, planted: Path, rect_model: Path,  # noqa: F811
                                                        colour_all: Path) -> None:
    res = _run(tmp_path, rect_model, planted, colour_all)
    labels = taxonomy_labels()
    assert res["classification_categories"] == {"0": "fox", "1": "wolf", "2": "elk", "3": "bear",
                                                "4": "moose"}
    assert res["classification_category_descriptions"] == {str(i): t for i, t in enumerate(labels)}
    assert res["classification_category_descriptions"]["0"].endswith(
        ";mammalia;carnivora;canidae;vulpes;vulpes;fox")
    assert list(res) == ["info", "detection_categories", "classification_categories",
                         "classification_category_descriptions", "images"]
    info = res["info"]
    assert info["classifier"] == "colours-all"
    assert TIME_RE.match(info["classification_completion_time"])
    assert info["classifier_metadata"]["typical_classification_threshold"] == 0.5
    seen = 0
    for entry in res["images"]:
        assert entry["detections"], entry
        for d in entry["detections"]:
            if d["category"] not in BOXES or (d["category"] == "1" and not _clean(entry["file"])):
                continue  # red on the other photos is their annotation boxes, not ours
            colour = BOXES[d["category"]][0]
            _check_classifications(d["classifications"], COLOURS[colour][1], len(labels))
            seen += 1
    assert seen == 14 * 2 + len(CLEAN_PHOTOS)  # green + blue everywhere, red on the clean photos


def test_default_rule_classifies_animals_only(tmp_path: Path, planted: Path, rect_model: Path,  # noqa: F811
                                              colour_animals: Path) -> None:
    res = _run(tmp_path, rect_model, planted, colour_animals)
    animals = 0
    for entry in by_file(res).values():
        for d in entry["detections"]:
            if d["category"] == "1":
                assert "classifications" in d
                if _clean(entry["file"]):
                    _check_classifications(d["classifications"], "0", 5)  # red -> fox
                animals += 1
            else:
                assert "classifications" not in d
    # red animals: the planted ones, plus the red annotation boxes' filled labels on the others
    assert animals >= len(CLEAN_PHOTOS)


def test_crop_threshold_and_max_crops(tmp_path: Path, planted: Path, rect_model: Path,  # noqa: F811
                                      model_dir: Path) -> None:  # noqa: F811
    high = build_colour_classifier(model_dir / "colours-high.onnx", crop_categories=["1", "2", "3"],
                                   crop_threshold=0.9)  # the rect detector says 0.875
    res = _run(tmp_path, rect_model, planted, high)
    assert all("classifications" not in d for e in res["images"] for d in e["detections"])
    assert res["classification_categories"]  # the file says which classifier ran, even with no crop
    one = build_colour_classifier(model_dir / "colours-one.onnx", crop_categories=["1", "2", "3"],
                                  max_crops_per_image=1)
    res = _run(tmp_path, rect_model, planted, one, "one.json")
    for e in res["images"]:
        assert sum("classifications" in d for d in e["detections"]) == 1


def test_without_classifier_the_shard_is_unchanged(tmp_path: Path, planted: Path, rect_model: Path,  # noqa: F811
                                                   colour_all: Path) -> None:
    """No classifier: the same document as before the stage existed. With one, the only
    differences are the added classification fields."""
    plain = _run(tmp_path, rect_model, planted, None, "plain.json")
    raw = (tmp_path / "plain.json").read_text()
    assert list(plain) == ["info", "detection_categories", "images"]
    assert set(plain["info"]) == {"format_version", "detector", "detection_completion_time",
                                  "detector_metadata", "execution_provider"}
    assert "classif" not in raw
    with_cls = _run(tmp_path, rect_model, planted, colour_all, "cls.json")
    for k in ("classification_categories", "classification_category_descriptions"):
        del with_cls[k]
    for k in ("classifier", "classification_completion_time", "classifier_metadata"):
        del with_cls["info"][k]
    for e in with_cls["images"]:
        for d in e["detections"]:
            d.pop("classifications", None)
    with_cls["info"]["detection_completion_time"] = plain["info"]["detection_completion_time"]
    assert json.dumps(with_cls, indent=1) == raw  # the engine writes json.dumps(indent=1)


def test_checkpoint_resume_keeps_classifications(tmp_path: Path, planted: Path, rect_model: Path,  # noqa: F811
                                                 colour_all: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped half-way: the checkpoint's detections are already classified; the resumed run
    classifies the rest and equals a straight run."""
    out = tmp_path / "res.json"
    cfg = RunConfig(model=rect_model, input=str(planted), output=str(out), classifier=colour_all,
                    checkpoint_every=3, workers=1)
    import scoring.engine as eng

    calls = {"n": 0}
    real = eng._Checkpoint.save

    def save_then_stop(self: Any, entries: Any, retry: Any) -> None:
        real(self, entries, retry)
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupted("test stop")

    monkeypatch.setattr(eng._Checkpoint, "save", save_then_stop)
    with pytest.raises(Interrupted):
        run(cfg)
    ckpt = json.loads((tmp_path / "res.json.checkpoint.json").read_text())
    assert "classifier_sha256" in ckpt["key"]
    kept = [d for e in ckpt["images"] for d in e.get("detections") or ()]
    assert kept and all("classifications" in d for d in kept)
    monkeypatch.setattr(eng._Checkpoint, "save", real)
    stats = run(cfg)
    assert stats.resumed == len(ckpt["images"]) > 0
    straight = _run(tmp_path, rect_model, planted, colour_all, "straight.json")
    resumed = load_results(out)
    assert resumed["images"] == straight["images"]


def test_crop_rule_like_speciesnet() -> None:
    """Pixels by truncation of each of top/left/height/width; zero outside the image; the
    float->uint8 step truncates like torchvision's convert_image_dtype."""
    assert crop_pixels([0.1, 0.2, 0.5, 0.3], 999, 501) == (int(0.2 * 501), int(0.1 * 999),
                                                          int(0.3 * 501), int(0.5 * 999))
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :, 0] = 200
    same = crop_u8(img, [0.0, 0.0, 1.0, 1.0], 10, "speciesnet")
    assert same is not None and same.shape == (10, 10, 3)
    # 200/255 * (256 - 1e-3), truncated: 200 back (the rule is lossless on an unscaled pixel)
    assert (same[:, :, 0] == 200).all() and (same[:, :, 1:] == 0).all()
    # a box reaching past the right edge reads zeros there (torchvision's crop pads)
    past = crop_u8(img, [0.5, 0.0, 0.75, 1.0], 15, "speciesnet")
    assert past is not None and (past[:, :5, 0] == 200).all() and (past[:, -3:, 0] < 200).all()
    assert crop_u8(img, [0.5, 0.5, 0.01, 0.5], 8) is None  # under one pixel wide: nothing to crop


def test_top_classes_order_and_ties() -> None:
    p = np.asarray([0.1, 0.3, 0.3, 0.05, 0.25], np.float32)
    assert top_classes(p, 3) == [["1", 0.3], ["2", 0.3], ["4", 0.25]]


def test_bad_classifier_is_a_clear_error(tmp_path: Path, planted: Path, rect_model: Path,  # noqa: F811
                                         colour_all: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(colour_all.read_bytes())
    manifest = json.loads(Path(str(colour_all) + ".json").read_text())
    manifest["labels"] = manifest["labels"][:3]
    manifest.pop("sha256")
    Path(str(bad) + ".json").write_text(json.dumps(manifest))
    cmd = [sys.executable, "-m", "scoring", "--model", str(rect_model), "--input", str(planted),
           "--output", str(tmp_path / "o.json"), "--classifier", str(bad), "-q"]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "has 5 classes but its manifest lists 3 labels" in r.stderr
    r = subprocess.run([*cmd[:-3], "--classifier", str(tmp_path / "missing.onnx"), "-q"], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "classifier not found" in r.stderr
    assert not (tmp_path / "o.json").exists()


def test_classifier_session_uses_detector_providers(colour_all: Path) -> None:
    clf = Classifier(colour_all, providers=["CPUExecutionProvider"])
    assert clf.providers == ["CPUExecutionProvider"]
    crop = np.zeros((480, 480, 3), np.uint8)
    crop[..., 2] = 255
    probs = clf.probabilities(clf.batch([crop, crop[..., ::-1].copy()]))
    assert probs.shape == (2, 5) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [int(np.argmax(p)) for p in probs] == [2, 0]  # blue -> elk, red -> fox
