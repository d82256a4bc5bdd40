"""Helpers for the CLI tests: run `mdbatch` in a subprocess, plant known rectangles on real photos."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from scoring.demo_model import box_tolerance, draw_rect, expected_box, grid_box

REPO_ROOT = Path(__file__).resolve().parents[1]

#: photos without strongly saturated areas (SOURCES.md), so the rect model sees only what we paint
PLAIN_PHOTOS = ("sample-arc-01.jpg", "sample-cfz-01.jpg", "pheasant_web.jpg", "idaho-camera-traps.jpg")


@dataclass(frozen=True)
class Planted:
    """A folder of real photos with known answers for the demo (rect) model."""

    folder: Path
    #: file (relative, forward slashes) -> [(category, expected normalized box)]; None = a failure
    answers: dict[str, list[tuple[str, list[float]]] | None]
    sizes: dict[str, tuple[int, int]]


def plant_photos(dest: Path, camera_trap_dir: Path) -> Planted:
    """Copy four real photos (one in a subfolder), paint rectangles, add one corrupt JPEG."""
    plan: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {
        "sample-arc-01.jpg": [("1", (0.10, 0.20, 0.25, 0.30))],
        "cam2/sample-cfz-01.jpg": [("2", (0.50, 0.40, 0.20, 0.35)), ("3", (0.05, 0.05, 0.20, 0.15))],
        "pheasant_web.jpg": [("1", (0.60, 0.55, 0.30, 0.30))],
        "idaho-camera-traps.jpg": [],
    }
    answers: dict[str, list[tuple[str, list[float]]] | None] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for rel, rects in plan.items():
        src = camera_trap_dir / Path(rel).name
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if not rects:
            shutil.copy(src, out)
            w, h = Image.open(src).size
            answers[rel], sizes[rel] = [], (w, h)
            continue
        img = np.array(Image.open(src).convert("RGB"))
        h, w = img.shape[:2]
        expected = []
        for cat, box in rects:
            snapped = grid_box(w, h, box)
            draw_rect(img, cat, snapped)
            expected.append((cat, expected_box(w, h, snapped)))
        Image.fromarray(img).save(out, quality=98, subsampling=0)
        answers[rel], sizes[rel] = expected, (w, h)
    (dest / "cam2" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    answers["cam2/broken.jpg"] = None
    (dest / "notes.txt").write_text("not an image")
    return Planted(dest, answers, sizes)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDBATCH_")}
    env.update({"MDBATCH_HOME": str(home), "PYTHONUNBUFFERED": "1", "COLUMNS": "120", "NO_COLOR": "1",
                "TERM": "dumb"})
    env.update(extra)
    return env


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mdbatch.cli", *args]


def run_cli(*args: str, home: Path, cwd: Path | None = None, timeout: float = 180,
            env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_cmd(*args), cwd=cwd or REPO_ROOT, env=cli_env(home, **(env_extra or {})),
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_results(results: dict[str, Any], planted: Planted) -> None:
    """Every image exactly once; each planted rectangle found where it was painted; the bad file failed."""
    files = [im["file"] for im in results["images"]]
    assert sorted(files) == sorted(planted.answers), "every image exactly once, nothing else (no .txt)"
    assert results["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    for im in results["images"]:
        want = planted.answers[im["file"]]
        if want is None:
            assert isinstance(im.get("failure"), str) and im.get("detections") is None
            continue
        got = sorted((d["category"], d["bbox"]) for d in im["detections"] if d["conf"] >= 0.2)
        assert [c for c, _ in got] == sorted(c for c, _ in want), im["file"]
        w, h = planted.sizes[im["file"]]
        tol = box_tolerance(w, h)
        for (_, gb), (_, wb) in zip(got, sorted(want), strict=True):
            assert all(abs(a - b) <= tol for a, b in zip(gb, wb, strict=True)), (im["file"], gb, wb)


@dataclass(frozen=True)
class Served:
    url: str
    key: str
    home: Path
    banner: str


def read_banner(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[str, str, str]:
    """(url, key, banner) from a starting `mdbatch serve`'s output, read up to its "Ctrl-C to stop"
    line; AssertionError with what it printed when it exits or never says both."""
    assert proc.stdout is not None
    lines: list[str] = []
    url = key = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(line.startswith("Ctrl-C") for line in lines):
        line = proc.stdout.readline()  # ends when serve prints its banner, or exits
        if not line:
            break
        lines.append(line)
        if m := re.search(r"listening on (http://\S+)", line):
            url = m.group(1)
        if m := re.match(r"key: (\S+)", line):
            key = m.group(1)
    assert url and key, "serve did not print its URL and key:\n" + "".join(lines)
    return url, key, "".join(lines)


@contextlib.contextmanager
def serving(home: Path, *args: str, env_extra: dict[str, str] | None = None) -> Iterator[Served]:
    """`mdbatch serve --port 0 ARGS` in a subprocess, read up to its "Ctrl-C to stop" line;
    stopped with Ctrl-C (SIGINT to its process group) afterwards."""
    root = str(Path(tempfile.gettempdir()).resolve())  # the tests' folders live there (issue 14: roots)
    proc = subprocess.Popen(cli_cmd("serve", "--port", "0", "--root", root, *args), cwd=REPO_ROOT,
                            env=cli_env(home, **(env_extra or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url, key, banner = read_banner(proc)
        yield Served(url, key, home, banner)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def file_server(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server for the files in ``folder`` (404 for anything else): (base URL
    without a trailing slash, request paths seen). Stands in for a release URL."""
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(folder), **kw)

        def log_message(self, *_a: Any) -> None:
            seen.append(self.path)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    finally:
        srv.shutdown()
        srv.server_close()


def drop_request(served: Served, name: str, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Drop a request JSON into the served inbox the way an uploader does (write aside, rename in)
    and return the status file the door writes beside it."""
    drop = served.home / "inbox" / "detection-requests"
    assert drop.is_dir()
    tmp = drop / f".{name}.tmp"
    tmp.write_text(json.dumps(body))
    tmp.rename(drop / name)
    status_file = drop / f"{name}.status.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not status_file.exists():
        time.sleep(0.2)
    assert status_file.exists(), "the door did not answer beside the request"
    return json.loads(status_file.read_text())
