"""The scorer's live-progress file (OUTPUT.progress.json): written while scoring, rate-limited,
left behind by an interrupted run with its partial counts, and ending with done == total; on a
local path and on a blob (Azurite), like the result itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from scoring.engine import RunConfig, run
from scoring.progress import PROGRESS_SUFFIX, ProgressFile
from scoring.storage import Location
from tests.conftest import REPO_ROOT, Azurite
from tests.scoring_fixtures import gradient_image, model_dir, rect_model, save  # noqa: F401

N = 24


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    for i in range(N):
        save(gradient_image(64 + i, 48, seed=i), d / f"img{i:03d}.png")
    (d / "broken.jpg").write_bytes(b"not a jpeg")  # a failed image is counted as done and failed
    return d


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_progress_file_rate_limit_and_final_write(tmp_path: Path) -> None:
    now = [100.0]
    p = ProgressFile(Location(str(tmp_path / "out.json")), total=10, every=2.0, clock=lambda: now[0])
    f = tmp_path / ("out.json" + PROGRESS_SUFFIX)
    assert p.update(0, 0) and _read(f)["done"] == 0
    assert not p.update(3, 0)  # changed, but within the interval
    now[0] += 2.5
    assert not p.update(0, 0)  # interval passed, but nothing changed
    assert p.update(4, 1)
    body = _read(f)
    assert (body["done"], body["total"], body["failed"]) == (4, 10, 1) and body["updated"].endswith("+00:00")
    assert p.finish(1) and _read(f)["done"] == 10
    assert p.writes == 3
    assert [x.name for x in tmp_path.iterdir()] == [f.name]  # atomic writes leave no temp files behind
    off = ProgressFile(Location(str(tmp_path / "off.json")), total=10, every=0)
    assert not off.update(1, 0) and not off.finish(0)
    assert not (tmp_path / ("off.json" + PROGRESS_SUFFIX)).exists()


def test_in_process_run_ends_with_done_equal_total(tmp_path: Path, images: Path,
                                                   rect_model: Path) -> None:  # noqa: F811
    out = tmp_path / "out.json"
    stats = run(RunConfig(model=rect_model, input=str(images), output=out.as_uri(), progress_every=0.01))
    prog = _read(Path(str(out) + PROGRESS_SUFFIX))
    assert prog["done"] == prog["total"] == N + 1 == stats.total
    assert prog["failed"] == stats.failed == 1
    assert out.exists()
    out2 = tmp_path / "out2.json"
    run(RunConfig(model=rect_model, input=str(images), output=str(out2), progress_every=0))
    assert out2.exists() and not Path(str(out2) + PROGRESS_SUFFIX).exists()


def test_progress_while_running_interrupted_and_resumed(tmp_path: Path, images: Path,
                                                        rect_model: Path) -> None:  # noqa: F811
    out = tmp_path / "out.json"
    prog = Path(str(out) + PROGRESS_SUFFIX)
    ckpt = Path(str(out) + ".checkpoint.json")
    cmd = [sys.executable, "-m", "scoring", "--model", str(rect_model), "--input", str(images),
           "--output", str(out), "--checkpoint-every", "4", "--workers", "2", "--progress-every", "0.05",
           "-q"]
    env = {**os.environ, "MDBATCH_SCORING_DELAY_MS": "100"}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while not ckpt.exists():  # a checkpoint means some images are done
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        if prog.exists():
            seen.append(_read(prog)["done"])
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert seen and seen == sorted(seen), seen  # appeared early, never went backwards
    partial = _read(prog)
    assert partial["total"] == N + 1 and 0 < partial["done"] < N + 1, partial
    assert not out.exists()
    # resume: the first write already counts the checkpointed images; the last says done == total
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=os.environ.copy(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    final = _read(prog)
    assert final["done"] == final["total"] == N + 1 and final["failed"] == 1
    assert len(json.loads(out.read_text())["images"]) == N + 1


def test_progress_file_beside_a_blob_output(azurite: Azurite, tmp_path: Path, images: Path,
                                            rect_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    svc = BlobServiceClient.from_connection_string(azurite.connection_string)
    cont = svc.create_container(f"progress-{os.urandom(4).hex()}")
    try:
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
        url = f"{azurite.blob_endpoint}/{cont.container_name}/req/shards/00000.result.json"
        run(RunConfig(model=rect_model, input=str(images), output=url))
        names = sorted(b.name for b in cont.list_blobs())
        assert names == ["req/shards/00000.result.json", "req/shards/00000.result.json" + PROGRESS_SUFFIX]
        prog = json.loads(cont.download_blob("req/shards/00000.result.json" + PROGRESS_SUFFIX).readall())
        assert prog["done"] == prog["total"] == N + 1
    finally:
        svc.delete_container(cont.container_name)
