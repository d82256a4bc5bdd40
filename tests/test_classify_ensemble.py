"""SpeciesNet's ensemble (geofence, roll-up, detector/classifier rules) on our classifications: the
final labels equal what the `speciesnet` package's own combiner gives for the same inputs.

Needs the `speciesnet` package installed without its heavy dependencies
(`pip install --no-deps -r requirements-speciesnet.txt`, done by `./run setup`); a missing
package is an error here, not a skip.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scoring.classifier import Classifier
from scoring.classifier_demo import build_colour_classifier
from scoring.classifier_ensemble import load_taxonomy_map, speciesnet_parts
from scoring.classifier_manifest import label_from
from scoring.engine import RunConfig, run
from scoring.images import decode_image
from tests.scoring_fixtures import (  # noqa: F401
    CLEAN_PHOTOS,
    load_results,
    model_dir,
    plant_boxes,
    rect_model,
    save,
)

SN = speciesnet_parts()
C = SN.constants.Classification


def _label(taxa: str, common: str) -> str:
    return f"{uuid.uuid5(uuid.NAMESPACE_URL, 'mdbatch-test/' + taxa)};{taxa};{common}"


FOX = _label("mammalia;carnivora;canidae;vulpes;vulpes", "red fox")
WOLF = _label("mammalia;carnivora;canidae;canis;lupus", "gray wolf")
ELK = _label("mammalia;cetartiodactyla;cervidae;cervus;canadensis", "elk")
HIGHER = [_label("mammalia;carnivora;canidae;vulpes;", "vulpes species"),
          _label("mammalia;carnivora;canidae;;", "canine family"),
          _label("mammalia;carnivora;;;", "carnivorous mammal"),
          _label("mammalia;;;;", "mammal")]
# the classifier: one label per class, logits from the crop's mean colour (red: mostly fox, some wolf)
CLASSES = [(FOX, (1.0, -1.0, -1.0)), (WOLF, (0.6, -0.6, -1.0)), (ELK, (-1.0, -1.0, 1.0)),
           (C.BLANK.value, (0.0, 0.0, 0.0)), (C.HUMAN.value, (-1.0, 1.0, -1.0)),
           (C.VEHICLE.value, (-0.5, -0.5, 0.5))]
BOXES = {"1": (0.10, 0.15, 0.20, 0.25), "2": (0.55, 0.10, 0.30, 0.20), "3": (0.40, 0.60, 0.25, 0.30)}


@pytest.fixture(scope="module")
def speciesnet_like(model_dir: Path) -> Path:  # noqa: F811
    """A classifier laid out like a SpeciesNet export: labels, taxonomy file, geofence file."""
    folder = model_dir / "sn-like"
    folder.mkdir(exist_ok=True)
    taxonomy = [lb for lb, _ in CLASSES] + HIGHER + [C.ANIMAL.value, C.UNKNOWN.value]
    (folder / "sn-like.taxonomy.txt").write_text("\n".join(taxonomy) + "\n", encoding="utf-8")
    geofence = {"mammalia;carnivora;canidae;vulpes;vulpes": {"allow": {"GBR": [], "USA": ["AK"]}}}
    (folder / "sn-like.geofence.json").write_text(json.dumps(geofence), encoding="utf-8")
    return build_colour_classifier(
        folder / "sn-like.onnx", classes=CLASSES, crop_categories=["1", "2", "3"], crop_threshold=0.1,
        ensemble={"taxonomy": "sn-like.taxonomy.txt", "geofence": "sn-like.geofence.json"})


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, camera_trap_dir: Path) -> Path:
    src = tmp_path_factory.mktemp("ens-photos")
    return plant_boxes(src, camera_trap_dir, BOXES)


def _expected(results: dict[str, Any], src: Path, clf_path: Path, country: str | None,
              admin1: str | None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(our detection, the speciesnet combiner's answer) for every classified detection, the
    combiner fed independently: our crop of the decoded image, the classifier's top 5, the
    detection's label and confidence, the country."""
    clf = Classifier(clf_path, providers=["CPUExecutionProvider"])
    folder = clf_path.parent
    tmap = load_taxonomy_map(folder / "sn-like.taxonomy.txt", SN)
    gmap = json.loads((folder / "sn-like.geofence.json").read_text())
    labels = {"1": "animal", "2": "human", "3": "vehicle"}
    pairs = []
    for im in results["images"]:
        img = decode_image((src / im["file"]).read_bytes())
        for d in im["detections"]:
            if "classifications" not in d:
                continue
            crop = clf.crop(img, d["bbox"])
            assert crop is not None
            p = clf.probabilities(clf.batch([crop]))[0]
            order = np.argsort(-p, kind="stable")[:5]
            [answer] = SN.ensemble_prediction_combiner.combine_predictions(
                classifications_list=[{"classes": [CLASSES[i][0] for i in order],
                                       "scores": [float(p[i]) for i in order]}],
                detections=[{"label": labels[d["category"]], "conf": d["conf"]}],
                country=country, admin1_region=admin1, taxonomy_map=tmap, geofence_map=gmap,
                enable_geofence=True, geofence_fn=SN.geofence_utils.geofence_animal_classification,
                roll_up_fn=SN.geofence_utils.roll_up_labels_to_first_matching_level)
            pairs.append((d, answer))
    return pairs


@pytest.mark.parametrize(("country", "admin1"), [("KEN", None), ("GBR", None), (None, None),
                                                 ("USA", None), ("USA", "AK"), ("USA", "CA")])
def test_final_labels_equal_the_speciesnet_combiner(tmp_path: Path, photos: Path, rect_model: Path,  # noqa: F811
                                                    speciesnet_like: Path, country: str | None,
                                                    admin1: str | None) -> None:
    out = tmp_path / "out.json"
    run(RunConfig(model=rect_model, input=str(photos), output=str(out), classifier=speciesnet_like,
                  classifier_options={"ensemble": True, "country": country, "admin1_region": admin1}))
    res = load_results(out)
    desc = res["classification_category_descriptions"]
    pairs = _expected(res, photos, speciesnet_like, country, admin1)
    assert len(pairs) == 9  # three boxes on each of three photos
    finals: dict[str, set[str]] = {}
    for d, answer in pairs:
        [[cid, score]] = d["classifications"]
        assert desc[cid] == answer["class"], (d, answer)
        assert score == math.floor(answer["score"] * 1000) / 1000
        assert len(d["raw_classifications"]) == 5
        finals.setdefault(d["category"], set()).add(answer["class"])
    # the geofence did act: fox where foxes are allowed, a rolled-up taxon elsewhere
    fox_allowed = country in (None, "GBR") or (country == "USA" and admin1 in (None, "AK"))
    assert (finals["1"] == {FOX}) is fox_allowed, finals
    assert finals["2"] == {C.HUMAN.value} and finals["3"] == {C.VEHICLE.value}  # the detector's call
    meta = res["info"]["classifier_metadata"]
    assert meta["ensemble"] == {"speciesnet": True, "geofence": True}
    # the ensemble's answers are categories too, with the same ids whatever the shard
    names = res["classification_categories"]
    assert set(names.values()) >= {"red fox", "canine family", "vulpes species", "human", "vehicle"}
    assert list(names)[:len(CLASSES)] == [str(i) for i in range(len(CLASSES))]


def test_ensemble_without_its_files_is_a_clear_error(tmp_path: Path, photos: Path, rect_model: Path,  # noqa: F811
                                                     model_dir: Path) -> None:  # noqa: F811
    from scoring.classifier import ClassifierError

    plain = build_colour_classifier(model_dir / "no-ensemble.onnx")
    with pytest.raises(ClassifierError, match="has no ensemble files"):
        run(RunConfig(model=rect_model, input=str(photos), output=str(tmp_path / "o.json"), classifier=plain,
                      classifier_options={"ensemble": True}))


def test_taxonomy_map_follows_speciesnet(tmp_path: Path) -> None:
    """speciesnet.ensemble builds its map from the five taxonomy fields of each label, leaves out
    blank, vehicle and unknown, and always has human and animal."""
    path = tmp_path / "taxonomy.txt"
    path.write_text("\n".join([FOX, *HIGHER, C.BLANK.value, C.VEHICLE.value, C.UNKNOWN.value]) + "\n")
    tmap = load_taxonomy_map(path, SN)
    assert tmap["mammalia;carnivora;canidae;vulpes;vulpes"] == FOX
    assert tmap["mammalia;carnivora;canidae;;"] == HIGHER[1]
    assert tmap["mammalia;primates;hominidae;homo;sapiens"] == C.HUMAN.value
    assert tmap[";;;;"] == C.ANIMAL.value  # blank/vehicle/animal share ";;;;": animal wins
    assert C.BLANK.value not in tmap.values() and C.VEHICLE.value not in tmap.values()
    assert label_from(FOX).name == "red fox"


def test_checkpoint_of_another_option_is_not_resumed(tmp_path: Path, photos: Path, rect_model: Path,  # noqa: F811
                                                     speciesnet_like: Path, monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    """A shard stopped without the ensemble, resubmitted with it, starts over (its checkpoint holds
    raw classifications that the ensemble never saw)."""
    import scoring.engine as eng

    out = tmp_path / "res.json"
    real = eng._Checkpoint.save

    def save_then_stop(self: Any, entries: Any, retry: Any) -> None:
        real(self, entries, retry)
        raise eng.Interrupted("test stop")

    monkeypatch.setattr(eng._Checkpoint, "save", save_then_stop)
    with pytest.raises(eng.Interrupted):
        run(RunConfig(model=rect_model, input=str(photos), output=str(out), classifier=speciesnet_like,
                      checkpoint_every=1, workers=1))
    monkeypatch.setattr(eng._Checkpoint, "save", real)
    assert json.loads((tmp_path / "res.json.checkpoint.json").read_text())["images"]
    stats = run(RunConfig(model=rect_model, input=str(photos), output=str(out), classifier=speciesnet_like,
                          classifier_options={"ensemble": True, "country": "KEN"}))
    assert stats.resumed == 0 and stats.scored == 3
    dets = [d for im in load_results(out)["images"] for d in im["detections"]]
    assert all("raw_classifications" in d for d in dets)
