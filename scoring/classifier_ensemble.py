"""SpeciesNet's ensemble as an option of the classification stage: detector/classifier combination
rules, geofence and taxonomic roll-up, by the ``speciesnet`` package's own pure-Python parts.

Why call the library rather than rewrite it: the rules (thresholds, the order they apply, how a
geofenced species rolls up to genus/family/...) are SpeciesNet's and change with its releases; our
final labels must be the ones its own pipeline gives. We load only ``speciesnet.constants``,
``taxonomy_utils``, ``geofence_utils`` and ``ensemble_prediction_combiner`` (stdlib-only modules)
without running the package's ``__init__``, which would import torch, PIL, kagglehub and more:
install it with ``pip install --no-deps speciesnet`` (requirements-speciesnet.txt).

The one piece we write ourselves is the taxonomy map (``speciesnet.ensemble._load_taxonomy_from_file``
lives in a module that imports those heavy packages); tests check it against the documented rule.

Input files (SpeciesNet model folder: ``taxonomy_release.txt``, ``geofence_release.json``) are named
by the classifier manifest's ``ensemble`` object, relative to the manifest.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: how SpeciesNet's detector labels read our MegaDetector category names
DETECTOR_LABELS = {"animal": "animal", "person": "human", "human": "human", "vehicle": "vehicle"}
NUM_FOR_ENSEMBLE = 5  # speciesnet.constants.NUM_CLASSIFICATIONS_FOR_ENSEMBLE


class EnsembleError(Exception):
    """The ensemble cannot run (package missing, files missing or unreadable)."""


def speciesnet_parts() -> types.SimpleNamespace:
    """The pure-Python modules of the installed ``speciesnet`` package, without its __init__."""
    mods = {}
    if "speciesnet" not in sys.modules:
        spec = importlib.util.find_spec("speciesnet")
        if spec is None or not spec.submodule_search_locations:
            raise EnsembleError("the ensemble needs the speciesnet package: "
                                "pip install --no-deps -r requirements-speciesnet.txt")
        pkg = types.ModuleType("speciesnet")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["speciesnet"] = pkg
    for name in ("constants", "taxonomy_utils", "geofence_utils", "ensemble_prediction_combiner"):
        mods[name] = importlib.import_module(f"speciesnet.{name}")
    return types.SimpleNamespace(**mods)


def load_taxonomy_map(path: Path, sn: types.SimpleNamespace) -> dict[str, str]:
    """SpeciesNet's taxonomy map: the five taxonomy fields of a label -> the label; blank, vehicle
    and unknown are left out; human and animal are always there (as its ensemble builds it)."""
    def taxa(label: str) -> str:
        return ";".join(label.split(";")[1:6])

    labels = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    tmap = {taxa(lb): lb for lb in labels}
    C = sn.constants.Classification
    for lb in (C.BLANK, C.VEHICLE, C.UNKNOWN):
        tmap.pop(taxa(lb), None)
    for lb in (C.HUMAN, C.ANIMAL):
        tmap[taxa(lb)] = lb
    return tmap


@dataclass
class Ensemble:
    """Combines one crop's classifier scores with its detection, as SpeciesNet's ensemble does."""

    taxonomy_map: dict[str, str]
    geofence_map: dict[str, Any]
    geofence: bool
    sn: types.SimpleNamespace

    @classmethod
    def from_manifest(cls, manifest_dir: Path, spec: dict[str, Any]) -> Ensemble:
        sn = speciesnet_parts()
        try:
            tmap = load_taxonomy_map(manifest_dir / str(spec["taxonomy"]), sn)
            gmap = json.loads((manifest_dir / str(spec["geofence"])).read_text(encoding="utf-8"))
        except (KeyError, OSError, ValueError) as e:
            raise EnsembleError(f"classifier ensemble files (taxonomy, geofence) beside the manifest "
                                f"in {manifest_dir}: {e}") from None
        return cls(tmap, gmap, bool(spec.get("geofence_enabled", True)), sn)

    def labels(self) -> list[str]:
        """Every label the ensemble can answer: taxonomy entries and SpeciesNet's special classes."""
        C = self.sn.constants.Classification
        return sorted({*self.taxonomy_map.values(), *(c.value for c in C)})

    def combine(self, classes: list[str], scores: list[float], detections: list[dict[str, Any]],
                country: str | None, admin1_region: str | None) -> list[dict[str, Any]]:
        """``classes``/``scores``: per crop, its top classes (labels) and scores, descending;
        ``detections``: per crop ``{"label": animal|human|vehicle, "conf"}``. Returns per crop
        ``{"class", "score", "source"}`` from ``speciesnet.ensemble_prediction_combiner``."""
        g = self.sn.geofence_utils
        return self.sn.ensemble_prediction_combiner.combine_predictions(
            classifications_list=[{"classes": c[:NUM_FOR_ENSEMBLE], "scores": s[:NUM_FOR_ENSEMBLE]}
                                  for c, s in zip(classes, scores, strict=True)],
            detections=detections, country=country, admin1_region=admin1_region,
            taxonomy_map=self.taxonomy_map, geofence_map=self.geofence_map,
            enable_geofence=self.geofence, geofence_fn=g.geofence_animal_classification,
            roll_up_fn=g.roll_up_labels_to_first_matching_level)
