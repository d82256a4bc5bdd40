"""Turning `--model` into an ONNX file in the embedded service's model folder.

`--model` is one of:
- `demo`: built here with scoring.demo_model (no network): it reports pure
  red/green/blue rectangles as animal/person/vehicle. For trying the tool.
- a known MegaDetector name (MDV5A, MDV5B, MDV1000-REDWOOD, ...): downloaded
  once from its official release URL into the cache, checked against the
  checksum MegaDetector's own code lists (md5), and converted to ONNX once with
  `python -m scoring.export` (needs the optional PyTorch extra).
- a path to a model file: `.onnx` is used as is (a manifest `FILE.json` beside it
  is picked up); `.pt` is converted like a known model.

The service names models by version name (MDBATCH_MODEL_DIR/NAME.onnx), so a
file is registered under a name derived from its content hash.

Conversion runs in the interpreter that has the PyTorch extra: $MDBATCH_TORCH_PYTHON, else
the project's `.venv-torch` (made by `.ci/torch-venv.sh`), else this one. Tests point known
names at a loopback server with $MDBATCH_KNOWN_MODELS_OVERRIDE (a JSON file
`{"NAME": {"url": ..., "md5": ...}}`); nothing else reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mdbatch import paths
from mdbatch.errors import CliError

DEMO = "demo"


@dataclass(frozen=True)
class KnownModel:
    """A published MegaDetector checkpoint (facts from agentmorris/MegaDetector run_detector.py)."""

    name: str
    version: str  # MegaDetector's canonical version string
    url: str
    md5: str
    typical_threshold: float | None = None
    conservative_threshold: float | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


_V5 = "https://github.com/agentmorris/MegaDetector/releases/download/v5.0/"
_V1000 = "https://github.com/agentmorris/MegaDetector/releases/download/v1000.0/"

KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel("MDV5A", "v5a.0.0", _V5 + "md_v5a.0.0.pt", "ec1d7603ec8cf642d6e0cd008ba2be8c", 0.2, 0.05),
        KnownModel("MDV5B", "v5b.0.0", _V5 + "md_v5b.0.0.pt", "bc235e73f53c5c95e66ea0d1b2cbf542", 0.2, 0.05),
        KnownModel("MDV5A.0.1", "v5a.0.1", _V5 + "md_v5a.0.1.pt",
                   "60f8e7ec1308554df258ed1f4040bc4f", 0.2, 0.05),
        KnownModel("MDV5B.0.1", "v5b.0.1", _V5 + "md_v5b.0.1.pt",
                   "f17ed6fedfac2e403606a08c89984905", 0.2, 0.05),
        KnownModel("MDV1000-REDWOOD", "v1000.0.0-redwood", _V1000 + "md_v1000.0.0-redwood.pt",
                   "74474b3aec9cf1a990da38b37ddf9197", 0.3),
        KnownModel("MDV1000-CEDAR", "v1000.0.0-cedar", _V1000 + "md_v1000.0.0-cedar.pt",
                   "3d6472c9b95ba687b59ebe255f7c576b"),
        KnownModel("MDV1000-LARCH", "v1000.0.0-larch", _V1000 + "md_v1000.0.0-larch.pt",
                   "cab94ebd190c2278e12fb70ffd548b6d"),
        KnownModel("MDV1000-SORREL", "v1000.0.0-sorrel", _V1000 + "md_v1000.0.0-sorrel.pt",
                   "4339a2c8af7a381f18ded7ac2a4df03e"),
        KnownModel("MDV1000-SPRUCE", "v1000.0.0-spruce", _V1000 + "md_v1000.0.0-spruce.pt",
                   "1c9d1d2b3ba54931881471fdd508e6f2"),
    )
}

Log = Callable[[str], None]


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready for the embedded service: `name` is what the request's model_version says."""

    name: str
    path: Path
    typical_threshold: float


def _known(name: str) -> KnownModel | None:
    """The known model `name`, with the test-only URL/md5 override applied when set."""
    known = KNOWN_MODELS.get(name.upper())
    override = os.environ.get("MDBATCH_KNOWN_MODELS_OVERRIDE")
    if known is None or not override:
        return known
    try:
        entry = json.loads(Path(override).read_text(encoding="utf-8")).get(known.name)
    except (OSError, ValueError, AttributeError) as e:
        raise CliError(f"MDBATCH_KNOWN_MODELS_OVERRIDE={override} is not a readable JSON object ({e})"
                       ) from None
    if not entry:
        return known
    url = str(entry.get("url", known.url))
    # the file keeps its published name, which is how MegaDetector's facts are looked up
    url = url if url.endswith("/" + known.filename) else url.rstrip("/") + "/" + known.filename
    return KnownModel(known.name, known.version, url, str(entry.get("md5", known.md5)),
                      known.typical_threshold, known.conservative_threshold)


def torch_python() -> str:
    """The interpreter that runs `python -m scoring.export` (it needs the PyTorch extra)."""
    env = os.environ.get("MDBATCH_TORCH_PYTHON")
    if env:
        return env
    venv = Path(__file__).resolve().parents[1] / ".venv-torch" / "bin" / "python"
    return str(venv) if venv.is_file() else sys.executable


def known_names() -> list[str]:
    return [DEMO, *KNOWN_MODELS]


def _hash(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest_threshold(onnx_path: Path, default: float = 0.2) -> float:
    for m in (Path(str(onnx_path) + ".json"), onnx_path.with_suffix(".json")):
        try:
            value = json.loads(m.read_text()).get("typical_detection_threshold")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int | float):
            return float(value)
    return default


def _build_demo(models: Path) -> ResolvedModel:
    path = models / "demo.onnx"
    if not (path.is_file() and Path(str(path) + ".json").is_file()):
        from scoring.demo_model import build_rect_model  # lazy: pulls in onnx

        tmp = models / ".demo-build" / "demo.onnx"
        build_rect_model(tmp, name=DEMO)
        os.replace(str(tmp) + ".json", str(path) + ".json")
        os.replace(tmp, path)
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return ResolvedModel(DEMO, path, _manifest_threshold(path))


def _check_onnx_readable(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CliError(f"cannot read model file {path} ({e.strerror}); check the path and its permissions"
                       ) from e
    if not head:
        raise CliError(f"model file {path} is empty; download it again or pass another --model")
    if path.suffix.lower() == ".onnx":
        try:
            import onnx

            graph = onnx.load(str(path), load_external_data=False).graph
            if not graph.node or not graph.input:
                # a few stray bytes parse as an empty protobuf: catch it here, not on every image
                raise ValueError("no graph")
        except ImportError:
            pass
        except Exception as e:
            why = "it holds no graph" if str(e) == "no graph" else type(e).__name__
            raise CliError(
                f"model file {path} is not a readable ONNX model ({why}); "
                "pass an .onnx export of the detector, a .pt checkpoint, or a known name like MDV5A"
            ) from e


def _register_file(src: Path, models: Path, name: str, threshold: float | None) -> ResolvedModel:
    """Link (or copy) an ONNX file into the model folder under `name`, with its manifest."""
    dest = models / f"{name}.onnx"
    if not dest.exists():
        tmp = models / f".{name}.onnx.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    for cand in (Path(str(src) + ".json"), src.with_suffix(".json")):
        if cand.is_file():
            shutil.copyfile(cand, str(dest) + ".json")
            break
    return ResolvedModel(name, dest, threshold if threshold is not None else _manifest_threshold(dest))


def _convert_pt(pt: Path, onnx_out: Path, known: KnownModel | None, log: Log) -> None:
    """`.pt` -> ONNX with the scoring package's exporter (in the PyTorch interpreter), once."""
    python = torch_python()
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise CliError(
            f"{pt.name} is a PyTorch checkpoint and PyTorch is not installed for {python}; install the "
            "PyTorch extra (bash .ci/torch-venv.sh, or pip install -r requirements-torch.txt) or pass "
            "an ONNX export: --model /path/to/model.onnx"
        )
    log(f"converting {pt.name} to ONNX (once)...")
    # the manifest's name/detector is the checkpoint's stem (md_v5a.0.0), as MegaDetector reports it
    cmd = [python, "-m", "scoring.export", str(pt), "--output", str(onnx_out), "--name", pt.stem]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0 or not onnx_out.is_file():
        lines = proc.stderr.strip().splitlines()
        errors = [ln for ln in lines if ln.startswith("error: ")]
        last = (errors or lines or ["no message"])[-1].removeprefix("error: ")
        raise CliError(f"converting {pt} to ONNX failed: {last}; pass an ONNX file with --model instead")


def _download(known: KnownModel, dest: Path, log: Log) -> None:
    tmp = dest.with_name(dest.name + ".part")
    log(f"downloading {known.name} from {known.url} (once)...")
    try:
        with urllib.request.urlopen(known.url, timeout=30) as resp, tmp.open("wb") as f:
            shutil.copyfileobj(resp, f, 1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise CliError(
            f"cannot download {known.name} ({reason}); without network, download {known.url} "
            f"elsewhere and pass the file: --model /path/to/{known.filename}"
        ) from None
    got = _hash(tmp, "md5")
    if got != known.md5:
        tmp.unlink(missing_ok=True)
        raise CliError(f"download of {known.name} is corrupt (md5 {got}, expected {known.md5}); run again")
    os.replace(tmp, dest)


def resolve(model: str, models: Path | None = None, downloads: Path | None = None,
            log: Log = lambda s: None) -> ResolvedModel:
    """Make `model` available to the embedded service; raise CliError with the fix when it cannot."""
    models = models or paths.models_dir()
    downloads = downloads or paths.download_dir()
    models.mkdir(parents=True, exist_ok=True)
    if model.lower() == DEMO:
        return _build_demo(models)
    known = _known(model)
    looks_like_path = os.sep in model or "/" in model or model.lower().endswith((".onnx", ".pt"))
    if known is not None and not Path(model).exists():
        onnx_path = models / f"{known.name}.onnx"
        if onnx_path.is_file():
            return ResolvedModel(known.name, onnx_path,
                                 known.typical_threshold or _manifest_threshold(onnx_path))
        downloads.mkdir(parents=True, exist_ok=True)
        pt = downloads / known.filename
        if not pt.is_file():
            _download(known, pt, log)
        _convert_pt(pt, onnx_path, known, log)
        return ResolvedModel(known.name, onnx_path,
                                 known.typical_threshold or _manifest_threshold(onnx_path))
    path = Path(model).expanduser()
    if not path.exists():
        if looks_like_path:
            raise CliError(f"model file not found: {path}; check the path, or use a known name "
                           f"({', '.join(known_names())})")
        raise CliError(f"unknown model name {model!r}; use one of {', '.join(known_names())} "
                       "or a path to a .onnx/.pt file")
    if path.is_dir():
        raise CliError(f"--model {path} is a folder; pass the model file inside it (.onnx or .pt)")
    _check_onnx_readable(path)
    digest = _hash(path, "sha256")[:12]
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in path.stem)[:40] or "model"
    name = f"{stem}-{digest}"
    if path.suffix.lower() == ".pt":
        onnx_path = models / f"{name}.onnx"
        if not onnx_path.is_file():
            _convert_pt(path, onnx_path, None, log)
        return ResolvedModel(name, onnx_path, _manifest_threshold(onnx_path))
    if path.suffix.lower() != ".onnx":
        raise CliError(f"model file {path} is neither .onnx nor .pt; "
                       "pass an ONNX export or a PyTorch checkpoint")
    return _register_file(path.resolve(), models, name, None)
