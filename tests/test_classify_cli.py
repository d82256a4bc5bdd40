"""A request with a classifier end to end: `mdbatch detect --classifier`, and the three doors of
`mdbatch serve` (HTTP, the v4 routes, the blob-upload inbox), with the demo detector and the demo
(colour) classifier installed; an unknown classifier is a 400 naming it."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_fixtures import Planted, Served, check_results, drop_request, plant_photos, run_cli, serving

from mdbatch.classifiers import resolve as resolve_classifier

ANIMAL_FILES = ("sample-arc-01.jpg", "pheasant_web.jpg")  # the red (animal) rectangles of plant_photos


@pytest.fixture(scope="module")
def planted_mod(tmp_path_factory: pytest.TempPathFactory, camera_trap_dir: Path) -> Planted:
    return plant_photos(tmp_path_factory.mktemp("cls-photos") / "photos", camera_trap_dir)


def check_classified(results: dict[str, Any], planted: Planted, classifier: str) -> None:
    """Detections as without a classifier; each red (animal) box named fox; nothing else classified."""
    check_results(results, planted)
    assert results["info"]["classifier"] == classifier
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", results["info"]["classification_completion_time"])
    assert results["classification_categories"]["0"] == "fox"
    assert results["classification_category_descriptions"]["0"].endswith(";vulpes;vulpes;fox")
    foxes = 0
    for im in results["images"]:
        for d in im.get("detections") or ():
            if d["category"] == "1" and d["conf"] >= 0.1:
                cls = d["classifications"]
                assert cls[0][0] == "0" and cls[0][1] > 0.9 and len(cls) == 5, (im["file"], cls)
                assert [c for _, c in cls] == sorted((c for _, c in cls), reverse=True)
                foxes += 1
            else:
                assert "classifications" not in d, (im["file"], d)
    assert foxes == len(ANIMAL_FILES)


def test_detect_with_classifier_names_species(tmp_path: Path, planted_mod: Planted) -> None:
    home = tmp_path / "home"
    out = tmp_path / "out" / "results.json"
    proc = run_cli("detect", str(planted_mod.folder), "--model", "demo", "--classifier", "demo",
                   "--country", "usa", "-o", str(out), home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "and classifier demo" in proc.stdout
    results = json.loads(out.read_text())
    check_classified(results, planted_mod, "mdbatch-demo-colours")
    assert results["info"]["classifier_metadata"]["country"] == "USA"
    # the summary counts species: 2 images with a fox, of 5
    row = next(ln.split() for ln in proc.stdout.splitlines() if ln.strip().startswith("species"))
    assert row == ["species", "fox", "2", "40%"]
    page = out.with_suffix(".html").read_text()
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
                      .group(1))  # type: ignore[union-attr]
    assert data["species"] == {"0": "fox"} and data["classifier"] == "mdbatch-demo-colours"
    boxes = [d for _, _, _, dets in data["images"] if isinstance(dets, list) for d in dets if d[0] == "1"]
    assert len(boxes) == 2 and all(d[6] == "0" and d[7] > 0.9 for d in boxes)
    # the same command without the classifier is another job (no resume of the classified one)
    plain = run_cli("detect", str(planted_mod.folder), "--model", "demo", "-o", str(tmp_path / "p.json"),
                    home=home)
    assert plain.returncode == 0 and "resuming" not in plain.stdout
    assert "classif" not in (tmp_path / "p.json").read_text()


def test_detect_unknown_classifier_is_one_clear_line(tmp_path: Path, planted_mod: Planted) -> None:
    p = run_cli("detect", str(planted_mod.folder), "--model", "demo", "--classifier", "nope", home=tmp_path)
    assert p.returncode == 2 and "unknown classifier 'nope'" in p.stderr and "Traceback" not in p.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("cls-serve-home")
    resolve_classifier("demo", home / "models")  # installed before the service lists its classifiers
    with serving(home, "--model", "demo") as served:
        yield served


def _api(s: Served) -> list[str]:
    return ["--api", s.url, "--key", s.key]


def _http(s: Served, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body else None
    req = urllib.request.Request(s.url + path, method=method, data=data,
                                 headers={"x-functions-key": s.key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_http_door_classifies_and_lists_classifiers(served: Served, planted_mod: Planted,
                                                    tmp_path: Path) -> None:
    mods = run_cli("models", *_api(served), home=tmp_path)
    assert mods.returncode == 0 and "demo  (classifier)" in mods.stdout
    assert _http(served, "GET", "/api/models")[1]["classifiers"] == ["demo"]
    out = tmp_path / "r.json"
    sub = run_cli("submit", str(planted_mod.folder), "--model", "demo", "--classifier", "demo",
                  "--wait", *_api(served), home=tmp_path)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    rid = re.search(r"request ([0-9a-f]{32}) submitted", sub.stdout).group(1)  # type: ignore[union-attr]
    w = run_cli("wait", rid, "-o", str(out), *_api(served), home=tmp_path)
    assert w.returncode == 0, w.stdout + w.stderr
    assert re.search(r"species fox\s+2", w.stdout), w.stdout
    check_classified(json.loads(out.read_text()), planted_mod, "mdbatch-demo-colours")


def test_unknown_classifier_is_a_400_naming_it(served: Served, planted_mod: Planted, tmp_path: Path) -> None:
    sub = run_cli("submit", str(planted_mod.folder), "--model", "demo", "--classifier", "speciesnet-x",
                  *_api(served), home=tmp_path)
    assert sub.returncode == 2
    assert "classifier_version 'speciesnet-x' is not supported (demo)" in sub.stderr
    code, body = _http(served, "POST", "/api/detections",
                       {"input_container_sas": planted_mod.folder.as_uri(), "model_version": "demo",
                        "classifier_version": "nope", "country": "Kenya", "admin1_region": "CA"})
    assert code == 400
    assert "classifier_version 'nope' is not supported" in body["error"]
    assert "country: " in body["error"] and "alpha-3" in body["error"]


def test_v4_door_with_classifier(served: Served, planted_mod: Planted, tmp_path: Path) -> None:
    code, body = _http(served, "POST", "/api/v4/camera-trap/detection-batch/request_detections",
                       {"input_container_sas": planted_mod.folder.as_uri(), "model_version": "demo",
                        "classifier_version": "demo", "country": "KEN", "ensemble": True})
    assert code == 200, body
    rid = body["request_id"]
    out = tmp_path / "v4.json"
    w = run_cli("wait", rid, "-o", str(out), *_api(served), home=tmp_path)
    assert w.returncode == 0, w.stdout + w.stderr
    results = json.loads(out.read_text())
    # SpeciesNet's ensemble: the demo geofence allows foxes in GBR only, so in Kenya the fox rolls
    # up to its family; the raw top classes stay beside the answer
    names = results["classification_categories"]
    finals = [(names[d["classifications"][0][0]], d["raw_classifications"][0][0])
              for im in results["images"] for d in im.get("detections") or () if "classifications" in d]
    assert finals == [("canine family", "0")] * len(ANIMAL_FILES)
    assert results["info"]["classifier_metadata"]["country"] == "KEN"
    assert results["info"]["classifier_metadata"]["ensemble"]["speciesnet"] is True


def test_inbox_door_with_classifier(served: Served, planted_mod: Planted, tmp_path: Path) -> None:
    body = {"input_container_sas": planted_mod.folder.as_uri(), "model_version": "demo",
            "classifier_version": "demo", "request_name": "dropped-cls", "caller": "field-team"}
    rid = drop_request(served, "cls.json", body)["request_id"]
    out = tmp_path / "dropped.json"
    w = run_cli("wait", rid, "-o", str(out), "--caller", "field-team", *_api(served), home=tmp_path)
    assert w.returncode == 0, w.stdout + w.stderr
    check_classified(json.loads(out.read_text()), planted_mod, "mdbatch-demo-colours")
