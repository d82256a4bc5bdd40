"""The optional second stage of a shard job: classify animal crops, write ``classifications``.

Why in the shard job: the image is already fetched and decoded there, so a crop costs a slice
and a resize. Crops from several images are batched (GPU) before one ONNX Runtime call on the
detector's own execution providers. The stage fills ``classifications`` into the detection dicts
the engine already holds, so results, checkpoints and resumes carry them with no other change;
it is flushed before every checkpoint so a checkpoint never holds an unclassified crop.

Output (MegaDetector batch output format): per classified detection ``classifications``
``[[class_id, conf], ...]`` (top ``top_k``, descending conf, 3 decimals truncated like detection
confs), and at file level ``classification_categories``, ``classification_category_descriptions``,
``info.classifier``, ``info.classification_completion_time``, ``info.classifier_metadata``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .classifier_manifest import (
    ClassifierManifest,
    ClassifierManifestError,
    label_from,
    load_classifier_manifest,
)
from .crops import crop_u8, to_input
from .manifest import file_sha256
from .sessions import default_providers, session_options

CONF_DIGITS = 3


class ClassifierError(Exception):
    """A classifier that is missing, cannot be loaded, or fails at inference."""


def _first_line(e: Exception) -> str:
    msg = str(e).strip()
    return msg.splitlines()[0] if msg else type(e).__name__


class Classifier:
    """An ONNX Runtime session for a crop classifier plus its manifest."""

    def __init__(self, model_path: Path, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ClassifierError(f"classifier not found: {model_path}")
        try:
            self.manifest: ClassifierManifest = load_classifier_manifest(model_path)
        except ClassifierManifestError as e:
            raise ClassifierError(str(e)) from None
        import onnxruntime as ort

        so = session_options(threads)
        if providers is None:
            providers = default_providers(ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=so, providers=providers)
        except Exception as e:
            raise ClassifierError(f"cannot load classifier {model_path}: {_first_line(e)}") from None
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        out_shape = self.session.get_outputs()[0].shape
        n = len(self.manifest.labels)
        if len(out_shape) == 2 and isinstance(out_shape[1], int) and out_shape[1] != n:
            raise ClassifierError(f"classifier {model_path} has {out_shape[1]} classes but its manifest "
                                  f"lists {n} labels: one label per class")
        self.sha256 = self.manifest.sha256 or file_sha256(model_path)
        self.on_gpu = self.providers[0] != "CPUExecutionProvider"

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """[N, classes] probabilities (softmax of the logits when the model gives logits)."""
        try:
            out = np.asarray(self.session.run(None, {self.input_name: batch})[0], dtype=np.float32)
        except Exception as e:
            raise ClassifierError(f"classifier inference failed on {len(batch)} crops: "
                                  f"{_first_line(e)[:300]}") from None
        if out.ndim != 2 or out.shape[1] != len(self.manifest.labels):
            raise ClassifierError(f"classifier output has shape {list(out.shape)}, expected "
                                  f"[N, {len(self.manifest.labels)}]")
        if self.manifest.output == "logits":
            out = out - out.max(axis=1, keepdims=True)
            np.exp(out, out=out)
            out /= out.sum(axis=1, keepdims=True)
        return out

    def crop(self, img: np.ndarray, bbox: list[float]) -> np.ndarray | None:
        m = self.manifest
        return crop_u8(img, bbox, m.input_size, m.crop)

    def batch(self, crops: list[np.ndarray]) -> np.ndarray:
        m = self.manifest
        return to_input(crops, m.layout, m.divide, m.mean, m.std)


def select_for_classification(detections: list[dict[str, Any]], m: ClassifierManifest) -> list[int]:
    """Indices of the detections to crop: the manifest's categories at or above its crop
    threshold; at most ``max_crops_per_image`` of them (highest conf), in list order."""
    idx = [i for i, d in enumerate(detections)
           if d.get("category") in m.crop_categories and float(d.get("conf", 0.0)) >= m.crop_threshold]
    if m.max_crops_per_image is not None and m.max_crops_per_image >= 0:
        idx = sorted(sorted(idx, key=lambda i: -float(detections[i]["conf"]))[:m.max_crops_per_image])
    return idx


def top_classes(probs: np.ndarray, k: int) -> list[list[Any]]:
    """``[[class_id, conf], ...]``: the k best, descending (ties: lower class id first)."""
    order = np.argsort(-probs, kind="stable")[:k]
    f = 10 ** CONF_DIGITS
    return [[str(int(i)), math.floor(float(probs[i]) * f) / f] for i in order]


class ClassifyStage:
    """Collects crops as detections arrive; classifies them in batches; writes the results.

    With ``ensemble`` (SpeciesNet's combiner, geofence and roll-up; scoring/classifier_ensemble.py)
    a detection's ``classifications`` is the ensemble's answer ``[[id, score]]`` and its raw top
    classes go to ``raw_classifications``; the answer may be a taxon above the classifier's labels
    (a genus, a family, "animal"), so the categories then also list the ensemble's taxonomy
    (ids after the classifier's labels, in a fixed order: the same in every shard).
    """

    def __init__(self, clf: Classifier, batch_size: int | None = None, country: str | None = None,
                 admin1_region: str | None = None, ensemble: bool = False,
                 detection_categories: dict[str, str] | None = None) -> None:
        self.clf = clf
        self.country, self.admin1_region = country, admin1_region
        self.detection_categories = dict(detection_categories or {})
        self.categories = clf.manifest.categories
        self.descriptions = clf.manifest.descriptions
        self.ensemble = None
        if ensemble:
            spec = clf.manifest.extra.get("ensemble")
            if not spec:
                raise ClassifierError(f"classifier {clf.manifest.name} has no ensemble files (manifest "
                                      "\"ensemble\": taxonomy and geofence); run it without the ensemble")
            from .classifier_ensemble import Ensemble, EnsembleError

            try:
                self.ensemble = Ensemble.from_manifest(Path(clf.manifest.extra["manifest_dir"]), spec)
            except EnsembleError as e:
                raise ClassifierError(str(e)) from None
            known = {lb.description for lb in clf.manifest.labels}
            for extra in self.ensemble.labels():
                if extra not in known:
                    lb = label_from(extra)
                    i = str(len(self.categories))
                    self.categories[i], self.descriptions[i] = lb.name or extra, lb.description
        self._ids = {d: i for i, d in self.descriptions.items()}
        self.batch_size = batch_size or clf.manifest.batch_size or (32 if clf.on_gpu else 8)
        self._pending: list[tuple[dict[str, Any], np.ndarray]] = []
        self.crops = 0
        self.batches = 0

    def add(self, img: np.ndarray, detections: list[dict[str, Any]]) -> None:
        """Crop the selected detections of one decoded image (the image can be dropped after)."""
        for i in select_for_classification(detections, self.clf.manifest):
            crop = self.clf.crop(img, detections[i]["bbox"])
            if crop is not None:
                self._pending.append((detections[i], crop))
        if len(self._pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Classify every pending crop (before a checkpoint and at the end)."""
        k = self.clf.manifest.top_k
        while self._pending:
            chunk, self._pending = self._pending[:self.batch_size], self._pending[self.batch_size:]
            probs = self.clf.probabilities(self.clf.batch([c for _, c in chunk]))
            for (det, _), p in zip(chunk, probs, strict=True):
                det["classifications"] = top_classes(p, k)
            if self.ensemble is not None:
                self._combine([det for det, _ in chunk], probs)
            self.crops += len(chunk)
            self.batches += 1

    def _combine(self, dets: list[dict[str, Any]], probs: np.ndarray) -> None:
        """SpeciesNet's ensemble per crop: the answer first, the raw top classes kept beside it."""
        from .classifier_ensemble import DETECTOR_LABELS, NUM_FOR_ENSEMBLE

        assert self.ensemble is not None
        labels = self.clf.manifest.labels
        classes, scores = [], []
        for p in probs:
            order = np.argsort(-p, kind="stable")[:NUM_FOR_ENSEMBLE]
            classes.append([labels[i].description for i in order])
            scores.append([float(p[i]) for i in order])
        det_in = [{"label": DETECTOR_LABELS.get(self.detection_categories.get(d["category"], ""), "animal"),
                   "conf": float(d["conf"])} for d in dets]
        try:
            out = self.ensemble.combine(classes, scores, det_in, self.country, self.admin1_region)
        except ValueError as e:
            raise ClassifierError(f"speciesnet ensemble: {e}") from None
        f = 10 ** CONF_DIGITS
        for d, res in zip(dets, out, strict=True):
            cid = self._ids.get(res["class"])
            if cid is None:  # ids must be the same in every shard: never invent one here
                raise ClassifierError(f"speciesnet ensemble answered {res['class']!r}, which is neither "
                                      "a classifier label nor in its taxonomy file")
            d["raw_classifications"] = d["classifications"]
            d["classifications"] = [[cid, math.floor(float(res["score"]) * f) / f]]

    def checkpoint_key(self) -> dict[str, Any]:
        """A checkpoint is resumed only by the same classifier with the same options."""
        key: dict[str, Any] = {"classifier_sha256": self.clf.sha256}
        if self.ensemble is not None or self.country or self.admin1_region:
            key["classifier_options"] = [self.ensemble is not None, self.country, self.admin1_region]
        return key

    def decorate(self, results: dict[str, Any]) -> dict[str, Any]:
        """The results document with the file-level classification fields, in the spec's order."""
        m = self.clf.manifest
        info = dict(results["info"])
        info["classifier"] = m.classifier
        info["classification_completion_time"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        info["classifier_metadata"] = {
            "typical_classification_threshold": m.typical_classification_threshold,
            "crop_threshold": m.crop_threshold,
            "crop_categories": list(m.crop_categories),
        }
        if self.ensemble is not None:
            info["classifier_metadata"]["ensemble"] = {"speciesnet": True, "geofence": self.ensemble.geofence}
        if self.country:
            info["classifier_metadata"]["country"] = self.country
            if self.admin1_region:
                info["classifier_metadata"]["admin1_region"] = self.admin1_region
        out = {k: v for k, v in results.items() if k != "images"}
        out["info"] = info
        out["classification_categories"] = self.categories
        out["classification_category_descriptions"] = self.descriptions
        out["images"] = results["images"]
        return out


def open_stage(classifier_path: Path | str | None, providers: list[str] | None,
               threads: int | None = None, batch_size: int | None = None, country: str | None = None,
               admin1_region: str | None = None, ensemble: bool = False,
               detection_categories: dict[str, str] | None = None) -> ClassifyStage | None:
    """The stage for ``classifier_path`` on the detector's providers, or None without one."""
    if not classifier_path:
        return None
    clf = Classifier(Path(classifier_path), providers=providers, threads=threads)
    return ClassifyStage(clf, batch_size, country=country, admin1_region=admin1_region, ensemble=ensemble,
                         detection_categories=detection_categories)

