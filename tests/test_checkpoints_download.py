"""`mdbatch detect --model MDV1000-SPRUCE` end to end: download (from a loopback server standing in
for the release URL), md5 check, conversion in the PyTorch venv, scoring, results that match
MegaDetector-classic on the PyTorch model. Also: a corrupt download and a missing package are
refused with one clear line."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests import checkpoint_fixtures as cf
from tests.cli_fixtures import file_server, run_cli

PHOTOS = ("sample-cfz-01.jpg", "pheasant_web.jpg")


@pytest.fixture(scope="module")
def torch_py() -> Path:
    return cf.torch_python_for_tests()


serve = file_server  # the release URL's stand-in


def _override(tmp: Path, url: str, md5: str) -> Path:
    p = tmp / "known-models.json"
    p.write_text(json.dumps({"MDV1000-SPRUCE": {"url": url, "md5": md5}}))
    return p


def _photos(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        shutil.copy(cf.PHOTOS / name, dest / name)
    return dest


def test_known_name_downloads_converts_and_matches(torch_py: Path, tmp_path: Path) -> None:
    release = tmp_path / "release" / "v1000.0"
    pt = cf.build("spruce", release)
    md5 = hashlib.md5(pt.read_bytes()).hexdigest()
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "results.json"
    home = tmp_path / "home"
    with serve(tmp_path / "release") as (base, seen):
        env = {"MDBATCH_TORCH_PYTHON": str(torch_py),
               "MDBATCH_KNOWN_MODELS_OVERRIDE": str(_override(tmp_path, f"{base}/v1000.0/{pt.name}", md5))}
        proc = run_cli("detect", str(photos), "--model", "MDV1000-SPRUCE", "-o", str(out), "--no-preview",
                       home=home, env_extra=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert seen == [f"/v1000.0/{pt.name}"]  # downloaded once, from the URL given
    assert (home / "downloads" / pt.name).read_bytes() == pt.read_bytes()
    manifest = json.loads((home / "models" / "MDV1000-SPRUCE.onnx.json").read_text())
    assert (manifest["input_size"], manifest["stride"], manifest["layout"]) == (640, 32, "yolov5")

    results = json.loads(out.read_text())
    ours = {Path(im["file"]).name: im["detections"] for im in results["images"]}
    assert sorted(ours) == sorted(PHOTOS)
    ref = cf.reference(pt, [photos / p for p in PHOTOS], tmp_path / "reference.json")
    sizes = {p: Image.open(photos / p).size for p in PHOTOS}
    res = cf.compare(ref, ours, sizes)
    assert res["boxes"] >= 3 and res["unmatched"] <= max(2, res["boxes"] // 100), res
    assert res["max_px"] <= 1.0 and res["max_conf"] <= 0.001, res

    # a second run converts nothing and downloads nothing
    with serve(tmp_path / "release") as (_base, seen2):
        proc = run_cli("detect", str(photos), "--model", "MDV1000-SPRUCE", "-o", str(tmp_path / "again.json"),
                       "--no-preview", home=home, env_extra=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert seen2 == [] and "converting" not in proc.stderr


def test_corrupt_or_missing_download_is_refused(torch_py: Path, tmp_path: Path) -> None:
    release = tmp_path / "release" / "v1000.0"
    pt = cf.build("spruce", release)
    photos = _photos(tmp_path / "photos")
    home = tmp_path / "home"
    with serve(tmp_path / "release") as (base, _seen):
        wrong_md5 = _override(tmp_path, f"{base}/v1000.0/{pt.name}", "0" * 32)
        env = {"MDBATCH_TORCH_PYTHON": str(torch_py), "MDBATCH_KNOWN_MODELS_OVERRIDE": str(wrong_md5)}
        proc = run_cli("detect", str(photos), "--model", "MDV1000-SPRUCE", home=home, env_extra=env)
        assert proc.returncode != 0
        assert "corrupt" in proc.stderr and "Traceback" not in proc.stderr
        assert not (home / "downloads" / pt.name).exists()
        assert not (home / "models" / "MDV1000-SPRUCE.onnx").exists()
        missing = f"{base}/nowhere/{pt.name}"
        env["MDBATCH_KNOWN_MODELS_OVERRIDE"] = str(_override(tmp_path, missing, "0" * 32))
        proc = run_cli("detect", str(photos), "--model", "MDV1000-SPRUCE", home=home, env_extra=env)
    assert proc.returncode != 0
    assert "cannot download MDV1000-SPRUCE" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("family", "package"), [("spruce", "yolov5"), ("cedar", "yolov9"),
                                                 ("larch", "ultralytics")])
def test_missing_family_package_is_one_line(torch_py: Path, tmp_path: Path, family: str,
                                            package: str) -> None:
    pt = cf.build(family, tmp_path)
    # sys.modules[name] = None is Python's own way to make an import fail as if not installed
    code = (f"import sys; sys.modules[{package!r}] = None; from scoring.export import main; "
            f"sys.exit(main([{str(pt)!r}, '--output', {str(tmp_path / 'm.onnx')!r}]))")
    proc = subprocess.run([str(torch_py), "-c", code], capture_output=True, text=True, cwd=cf.REPO_ROOT)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    pip_name = {"yolov9": "yolov9pip"}.get(package, package)
    assert f"needs the {pip_name} package" in lines[0] and "requirements-torch.txt" in lines[0]


def test_export_without_torch_is_one_line(tmp_path: Path) -> None:
    if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.fail("the main venv must not have torch: the PyTorch extra lives in .venv-torch")
    pt = tmp_path / "md_v5a.0.0.pt"
    pt.write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-m", "scoring.export", str(pt)], capture_output=True, text=True,
                          cwd=cf.REPO_ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing package torch" in proc.stderr, proc.stderr
