"""QA of the README's claims against the real CLI and a real `mdbatch serve` (bugs found in release QA).

- `mdbatch serve` without --model must default to a model it has (it defaulted to MDV5A with no
  MDV5A.onnx: requests without model_version were accepted and then failed on every image).
- `wait` prints its output links whole even when stdout is not a terminal (80 columns): they were
  wrapped mid-URL. `list` shows request ids whole: they were cut with an ellipsis.
- A few stray bytes named .onnx is refused up front (it parsed as an empty ONNX model and every
  image failed); a run in which no image could be scored exits 1, not 0.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_fixtures import Served, run_cli, serving


@pytest.fixture(scope="module")
def served_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`mdbatch serve` exactly as the README shows it: no --model."""
    home = tmp_path_factory.mktemp("qa-serve-home")
    with serving(home) as served:
        yield served


def _call(s: Served, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(s.url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"x-functions-key": s.key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_serve_default_model_is_one_it_has(served_plain: Served, tmp_path: Path,
                                           camera_trap_dir: Path) -> None:
    models = _call(served_plain, "GET", "/api/models")
    default = models["default"]
    assert default in models["models"]
    assert (served_plain.home / "models" / f"{default}.onnx").is_file(), (default, "is listed but absent")
    assert f"default model: {default}" in served_plain.banner

    # a request without model_version (the default) is scored, not failed image by image
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("sample-crocdocs-01.jpg", "pheasant_web.jpg"):
        (folder / name).write_bytes((camera_trap_dir / name).read_bytes())
    rid = _call(served_plain, "POST", "/api/detections", {"input_container_sas": folder.as_uri()})["id"]

    # piped output (80 columns): links whole on one line, ids whole in the list
    w = run_cli("wait", rid, "--api", served_plain.url, "--key", served_plain.key, home=tmp_path / "client",
                env_extra={"COLUMNS": "80"})
    assert w.returncode == 0, w.stdout + w.stderr
    # issue 11: a link to the service's own download route (v4 file name), not a file:// URL
    m = re.search(r"^detections: (http://\S+)$", w.stdout, re.M)
    assert m and f"/api/detections/{rid}/files/{rid}_detections_" in m.group(1), w.stdout
    results = json.loads(urllib.request.urlopen(m.group(1)).read())
    assert all(im.get("failure") is None for im in results["images"]), results["images"]
    assert [len(im["detections"]) > 0 for im in results["images"]] == [False, True]  # pheasant, crocdocs

    ls = run_cli("list", "--api", served_plain.url, "--key", served_plain.key, home=tmp_path / "client",
                 env_extra={"COLUMNS": "80"})
    assert ls.returncode == 0 and rid in ls.stdout, ls.stdout


def test_graphless_onnx_file_is_refused_up_front(tmp_path: Path, camera_trap_dir: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes((camera_trap_dir / "pheasant_web.jpg").read_bytes())
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"x\n")  # parses as an empty ONNX protobuf
    p = run_cli("detect", str(photos), "--model", str(junk), "--no-preview", home=tmp_path / "h",
                cwd=tmp_path)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    msg = p.stderr.strip()
    assert msg.count("\n") == 0 and msg.startswith("error: ") and "Traceback" not in p.stderr
    assert "not a readable ONNX model" in msg and str(junk) in msg


def test_nothing_scored_exits_1(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    out = tmp_path / "r.json"
    p = run_cli("detect", str(photos), "--model", "demo", "-o", str(out), "--no-preview",
                home=tmp_path / "h", cwd=tmp_path)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "no image could be scored" in p.stderr and "Traceback" not in p.stderr
    assert json.loads(out.read_text())["images"][0]["failure"], "the results are still written"
