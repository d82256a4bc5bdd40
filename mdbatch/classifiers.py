"""Turning `--classifier` into an installed crop classifier of the embedded service (issue 12).

The service names classifiers by version name: MODEL_DIR/classifiers/NAME.onnx with its
classifier manifest NAME.onnx.json. `--classifier` is one of:
- `demo`: the colour classifier built here (scoring.classifier_demo, no network): red fox,
  green wolf, blue elk, yellow bear, grey moose; for trying the tool with the `demo` detector.
- the name of an installed classifier (`mdbatch models` lists them);
- a path to a classifier `.onnx` with its manifest beside it: registered under a name derived
  from its content hash (e.g. a SpeciesNet export from `python -m scoring.export_speciesnet`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mdbatch import paths
from mdbatch.errors import CliError

DEMO = "demo"


@dataclass(frozen=True)
class ResolvedClassifier:
    name: str
    path: Path


def classifiers_dir(models: Path | None = None) -> Path:
    return (models or paths.models_dir()) / "classifiers"


def installed(models: Path | None = None) -> list[str]:
    folder = classifiers_dir(models)
    return sorted(p.name[:-5] for p in folder.glob("*.onnx")) if folder.is_dir() else []


def _build_demo(folder: Path) -> ResolvedClassifier:
    path = folder / f"{DEMO}.onnx"
    if not (path.is_file() and Path(str(path) + ".json").is_file()):
        from scoring.classifier_demo import build_colour_classifier  # lazy: pulls in onnx

        tmp = folder / ".demo-build" / f"{DEMO}.onnx"
        build_colour_classifier(tmp, name=DEMO, classifier="mdbatch-demo-colours", ensemble=True)
        for extra in (".taxonomy.txt", ".geofence.json"):  # the ensemble's files, named by the manifest
            os.replace(tmp.parent / f"{DEMO}{extra}", folder / f"{DEMO}{extra}")
        os.replace(str(tmp) + ".json", str(path) + ".json")
        os.replace(tmp, path)
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return ResolvedClassifier(DEMO, path)


def _check_file(path: Path) -> None:
    from scoring.classifier_manifest import ClassifierManifestError, load_classifier_manifest

    try:
        load_classifier_manifest(path)
    except ClassifierManifestError as e:
        raise CliError(f"{e}; export one with `python -m scoring.export_speciesnet` or write its "
                       "manifest (docs/contracts.md, \"Classifier manifest\")") from None


def resolve(classifier: str, models: Path | None = None) -> ResolvedClassifier:
    """Make `classifier` available to the embedded service; CliError with the fix when it cannot."""
    folder = classifiers_dir(models)
    folder.mkdir(parents=True, exist_ok=True)
    if classifier.lower() == DEMO:
        return _build_demo(folder)
    if (folder / f"{classifier}.onnx").is_file() and "/" not in classifier and os.sep not in classifier:
        return ResolvedClassifier(classifier, folder / f"{classifier}.onnx")
    path = Path(classifier).expanduser()
    if not path.is_file():
        have = ", ".join([DEMO, *[n for n in installed(models) if n != DEMO]])
        raise CliError(f"unknown classifier {classifier!r}: not an installed name ({have}) nor a "
                       ".onnx file with its manifest")
    if path.suffix.lower() != ".onnx":
        raise CliError(f"classifier file {path} is not .onnx; export it with "
                       "`python -m scoring.export_speciesnet` first")
    _check_file(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in path.stem)[:40] or "classifier"
    name = f"{stem}-{digest}"
    dest = folder / f"{name}.onnx"
    if not dest.is_file():
        tmp = folder / f".{name}.onnx.tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)
    for cand in (Path(str(path) + ".json"), path.with_suffix(".json")):
        if cand.is_file():
            shutil.copyfile(cand, str(dest) + ".json")
            _copy_ensemble_files(cand, folder)
            break
    return ResolvedClassifier(name, dest)


def _copy_ensemble_files(manifest: Path, folder: Path) -> None:
    """The ensemble's taxonomy/geofence files travel with the manifest that names them."""
    import json

    try:
        spec = json.loads(manifest.read_text(encoding="utf-8")).get("ensemble") or {}
    except (OSError, ValueError, AttributeError):
        return
    for rel in (spec.get("taxonomy"), spec.get("geofence")) if isinstance(spec, dict) else ():
        src = manifest.parent / str(rel or "")
        if rel and src.is_file() and "/" not in str(rel) and ".." not in str(rel):
            shutil.copyfile(src, folder / str(rel))
