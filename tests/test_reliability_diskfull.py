"""Issue 14, item 3, the red-team way: the service's whole state folder (orchestration database,
work files, job records, checkpoints, secrets) sits on a small file system that is filled to the
last byte mid-job, then freed. The job completes with every image exactly once.

It needs a real small file system: a size-limited tmpfs mounted for the test (root with
CAP_SYS_ADMIN). Where mounting is not allowed the test says so and skips; the same fault is
injected without mounting by tests/test_reliability_storage.py, which always runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from embedded import EmbeddedHost
from tests.service_fixtures import APP_DIR, Dataset, check_results, dataset, model_dir, service_env  # noqa: F401
from tests.test_reliability_storage import _duplicates, _until
from tests.test_service_e2e import fetch, follow

SIZE_MB = 32


@contextlib.contextmanager
def small_fs(where: Path) -> Iterator[Path]:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m,mode=0700", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode}); "
                    "test_reliability_storage.py injects the same fault without mounting")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(path: Path) -> int:
    """Write a ballast file until the file system is full; returns its size."""
    n = 0
    chunk = b"\0" * (1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                n += os.write(fd, chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return n
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)


def test_state_folder_full_mid_job_then_freed(tmp_path: Path, model_dir: Path, dataset: Dataset) -> None:  # noqa: F811
    with small_fs(tmp_path / "fs") as fs:
        state = fs / "state"
        env = service_env(state, model_dir, MDBATCH_STALL_SECONDS="1", MDBATCH_PROGRESS_INTERVAL_S="0.5",
                          MDBATCH_SCORING_DELAY_MS="300", MDBATCH_LOCAL_WORKERS="2",
                          MDBATCH_CHECKPOINT_EVERY="1")
        with EmbeddedHost(APP_DIR, fs / "host", workers=4, env=env) as h:
            assert h.engine is not None
            r = requests.post(f"{h.base_url}/api/detections", timeout=30,
                              json={"input_container_sas": dataset.root.as_uri(), "caller": "alice"})
            assert r.status_code == 202, r.text
            rid, status_url = r.json()["id"], r.json()["statusQueryGetUri"]
            curated = f"{h.base_url}/api/detections/{rid}?caller=alice"
            _until("scoring", lambda: requests.get(curated, timeout=60).json().get("stage") == "scoring")

            ballast = fs / "ballast"
            assert fill(ballast) > 0
            # Something met the full disk: the host (its database or an activity) or a scorer.
            records = state / "compute" / "active"
            _until("a storage fault", lambda: h.engine.health.total_faults > 0
                   or any(b'"space_waits"' in p.read_bytes() for p in records.glob("*.json")), timeout=120)
            time.sleep(2)  # let it stay full a little longer
            ballast.unlink()  # space is back

            doc = follow(status_url, timeout=300)
            assert doc["runtimeStatus"] == "Completed", doc
            out = doc["output"]
            assert out["failed_shards"] == 0, out
            check_results(fetch(out["output_file_urls"]["detections"]), dataset)
            store_path = h.engine.store.path
        assert _duplicates(store_path) == []
