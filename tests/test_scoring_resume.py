"""Checkpoint/resume: kill the scorer part way (SIGTERM and SIGKILL), rerun, nothing twice or missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.scoring_fixtures import gradient_image, model_dir, rect_model, save  # noqa: F401

N = 30


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    for i in range(N):
        save(gradient_image(64 + i, 48, seed=i), d / f"img{i:03d}.png")
    return d


def _start(model: Path, inp: Path, out: Path, delay_ms: int) -> subprocess.Popen[str]:
    env = {**os.environ, "MDBATCH_SCORING_DELAY_MS": str(delay_ms)}
    return subprocess.Popen(
        [sys.executable, "-m", "scoring", "--model", str(model), "--input", str(inp), "--output", str(out),
         "--checkpoint-every", "4", "--workers", "2"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"scorer ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_kill_and_resume(tmp_path: Path, images: Path, rect_model: Path, sig: signal.Signals) -> None:  # noqa: F811
    out = tmp_path / "out.json"
    ckpt = Path(str(out) + ".checkpoint.json")
    proc = _start(rect_model, images, out, delay_ms=150)
    _wait_for(ckpt, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert "checkpoint" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    partial = json.loads(ckpt.read_text())["images"]
    assert 0 < len(partial) < N
    assert len({e["file"] for e in partial}) == len(partial)

    proc = _start(rect_model, images, out, delay_ms=0)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"resumed {len(partial)} of {N}" in err
    assert f"scored {N - len(partial)}," in err  # only the rest was scored
    files = [e["file"] for e in json.loads(out.read_text())["images"]]
    assert files == sorted(f"img{i:03d}.png" for i in range(N))  # each exactly once
    assert not ckpt.exists()


def test_checkpoint_for_other_model_is_ignored(tmp_path: Path, images: Path, rect_model: Path) -> None:  # noqa: F811
    out = tmp_path / "out.json"
    ckpt = Path(str(out) + ".checkpoint.json")
    ckpt.write_text(json.dumps({"format": "mdbatch-checkpoint/1", "key": {"model_sha256": "x"},
                                "images": [{"file": "img000.png", "detections": [{"bogus": 1}]}]}))
    proc = _start(rect_model, images, out, delay_ms=0)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    first = json.loads(out.read_text())["images"][0]
    assert first == {"file": "img000.png", "detections": []}


def test_fetch_failures_are_retried_on_resume(tmp_path: Path, images: Path, rect_model: Path) -> None:  # noqa: F811
    """An image that could not be fetched before the interruption is fetched again on resume."""
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(["in/a-late.png", *sorted(f"in/{p.name}" for p in images.iterdir())]))
    out = tmp_path / "out.json"
    ckpt = Path(str(out) + ".checkpoint.json")
    proc = _start(rect_model, lst, out, delay_ms=150)
    _wait_for(ckpt, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    data = json.loads(ckpt.read_text())
    assert "in/a-late.png" in data["retry"]
    save(gradient_image(64, 48), images / "a-late.png")  # the blob shows up (transient failure over)
    proc = _start(rect_model, lst, out, delay_ms=0)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    res = {e["file"]: e for e in json.loads(out.read_text())["images"]}
    assert res["in/a-late.png"] == {"file": "in/a-late.png", "detections": []}
    assert len(res) == N + 1
