"""`python -m scoring.export_speciesnet` on a SpeciesNet "always crop" model folder built here in the
published layout (random weights): the ONNX export with its manifest gives SpeciesNet's own crops and
scores on the same boxes, and runs in the shard job (with the ensemble from the exported files).

PyTorch lives in its own venv: $MDBATCH_TORCH_PYTHON, else .venv-torch/bin/python (issue 10's
`.ci/torch-venv.sh` makes it). A missing one is an error; MDBATCH_SKIP_TORCH_TESTS=1 skips on purpose.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scoring.classifier import Classifier
from scoring.engine import RunConfig, run
from scoring.images import decode_image
from tests import checkpoint_fixtures as cf
from tests.conftest import REPO_ROOT
from tests.scoring_fixtures import (  # noqa: F401
    CLEAN_PHOTOS,
    load_results,
    model_dir,
    plant_boxes,
    rect_model,
    save,
)

HELPER = REPO_ROOT / "tests" / "speciesnet_checkpoint.py"


def torch_python() -> Path:
    return cf.torch_python_for_tests()


def _torch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([str(torch_python()), *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("speciesnet")
    folder = base / "speciesnet-model"
    r = _torch(str(HELPER), "build", str(folder))
    assert r.returncode == 0, r.stderr
    out = base / "export" / "speciesnet-test.onnx"
    r = _torch("-m", "scoring.export_speciesnet", str(folder), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    return folder, out


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, camera_trap_dir: Path) -> Path:
    src = tmp_path_factory.mktemp("sn-photos")
    boxes = {"1": (0.12, 0.2, 0.3, 0.35), "2": (0.55, 0.1, 0.2, 0.4), "3": (0.5, 0.6, 0.35, 0.25)}
    return plant_boxes(src, camera_trap_dir, boxes)


def test_manifest_of_the_export(exported: tuple[Path, Path]) -> None:
    folder, onnx = exported
    m = json.loads(Path(str(onnx) + ".json").read_text())
    labels = (folder / "labels.txt").read_text().splitlines()
    assert m["format"] == "mdbatch-classifier/1" and m["classifier"] == "speciesnet-4.0.1a-test"
    assert m["labels"] == labels and m["input_size"] == 480 and m["layout"] == "nhwc"
    assert (m["crop"], m["output"], m["crop_threshold"]) == ("speciesnet", "logits", 0.1)
    assert m["crop_categories"] == ["1", "2", "3"]
    assert m["ensemble"] == {"taxonomy": "speciesnet-test.taxonomy.txt",
                             "geofence": "speciesnet-test.geofence.json"}
    copied = (onnx.parent / m["ensemble"]["taxonomy"]).read_text()
    assert copied == (folder / "taxonomy_release.txt").read_text()


def test_export_gives_speciesnets_crops_and_scores(tmp_path: Path, exported: tuple[Path, Path],
                                                   planted: Path, rect_model: Path) -> None:  # noqa: F811
    folder, onnx = exported
    out = tmp_path / "res.json"
    run(RunConfig(model=rect_model, input=str(planted), output=str(out), classifier=onnx))
    res = load_results(out)
    jobs: list[list[Any]] = []
    dets = []
    for im in res["images"]:
        boxes = [d for d in im["detections"] if "classifications" in d]
        assert len(boxes) == 3
        jobs.append([str(planted / im["file"]), [d["bbox"] for d in boxes]])
        dets += boxes
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    r = _torch(str(HELPER), "reference", str(folder), str(tmp_path / "jobs.json"), str(tmp_path / "ref"))
    assert r.returncode == 0, r.stderr
    ref = json.loads((tmp_path / "ref" / "scores.json").read_text())
    clf = Classifier(onnx, providers=["CPUExecutionProvider"])
    names = res["classification_category_descriptions"]
    k = 0
    for image, boxes in jobs:
        img = decode_image(Path(image).read_bytes())
        for bbox in boxes:
            ours = clf.crop(img, bbox)
            theirs = np.load(tmp_path / "ref" / f"crop{k}.npy")
            assert ours is not None and ours.shape == theirs.shape == (480, 480, 3)
            diff = np.abs(ours.astype(int) - theirs.astype(int))
            # same pixels; float rounding may move a value across an integer by one, rarely
            assert diff.max() <= 1 and (diff == 0).mean() > 0.999, (diff.max(), (diff == 0).mean())
            p = clf.probabilities(clf.batch([theirs]))[0]  # the model on SpeciesNet's very crop
            top = np.argsort(-p, kind="stable")[:5]
            assert [names[str(i)] for i in top] == ref[k]["classes"]
            assert np.allclose(p[top], ref[k]["scores"], atol=1e-5)
            # and the results file says what SpeciesNet says for that box
            got = dets[k]["classifications"]
            assert [names[c] for c, _ in got] == ref[k]["classes"]
            assert all(abs(c - s) <= 2e-3 for (_, c), s in zip(got, ref[k]["scores"], strict=True))
            k += 1
    assert k == 9
    # with the ensemble from the exported files (speciesnet's combiner)
    run(RunConfig(model=rect_model, input=str(planted), output=str(out), classifier=onnx,
                  classifier_options={"ensemble": True, "country": "KEN"}))
    res = load_results(out)
    finals = [(d["category"], res["classification_categories"][d["classifications"][0][0]])
              for im in res["images"] for d in im["detections"] if "classifications" in d]
    assert len(finals) == 9
    assert {f for c, f in finals if c == "2"} == {"human"}  # SpeciesNet: a person box > 0.7 is human
    assert {f for c, f in finals if c == "3"} == {"vehicle"}


def test_export_refuses_other_layouts(tmp_path: Path, exported: tuple[Path, Path]) -> None:
    folder, _ = exported
    bad = tmp_path / "full"
    bad.mkdir()
    info = json.loads((folder / "info.json").read_text())
    (bad / "info.json").write_text(json.dumps({**info, "type": "full_image"}))
    r = _torch("-m", "scoring.export_speciesnet", str(bad))
    assert r.returncode == 2 and "only 'always_crop'" in r.stderr
    r = _torch("-m", "scoring.export_speciesnet", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "has no info.json" in r.stderr
