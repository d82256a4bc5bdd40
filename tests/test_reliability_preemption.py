"""Issue 14, item 5: frequent pre-emption does not exhaust a shard's attempts when every attempt
makes progress, and the work stays close to one scoring per image.

Local scoring workers are SIGKILLed every 1-2 s (a bounded loop; each killed run has advanced its
checkpoint, as in the red-team trials) while a request of 120 images in two shards of 60 runs; a
shard needs several runs to get through. Before: 3 attempts per shard
in all, so shards failed and their images came back as failures. Now an attempt that advanced the
shard's checkpoint is not counted (poll_shard reports `checkpointed`), and every image is scored,
with total scoring work at most 1.3x the images, counted per image by a scorer that logs each
inference (tests/reliability_counting_scorer.py).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import requests
from PIL import Image

from activities import services as sv
from adapters.backends import compute_from_settings
from adapters.compute.base import JobState, JobStatus, ShardJob
from adapters.compute.local import _alive
from embedded import EmbeddedHost
from tests.service_fixtures import APP_DIR, Dataset, check_results, dataset, model_dir, service_env  # noqa: F401
from tests.test_service_e2e import fetch, follow

N_IMAGES = 120
SHARD = 60


def _images(root: Path) -> list[str]:
    rng = np.random.default_rng(7)
    names = []
    for i in range(N_IMAGES):
        name = f"cam{i % 4}/img{i:04d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        arr = (100 + rng.integers(0, 40, size=(48, 64, 3))).astype(np.uint8)  # grey noise, nothing to find
        Image.fromarray(arr).save(root / name)
        names.append(name)
    return sorted(names)


def _launcher(tmp: Path) -> Path:
    """An 'interpreter' for the local backend: `python -m scoring ARGS` -> the counting scorer."""
    helper = Path(__file__).with_name("reliability_counting_scorer.py")
    script = tmp / "counting-python"
    script.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{helper}" "$@"\n')
    script.chmod(0o755)
    return script


def _checkpointed(output_url: str) -> int:
    path = Path(unquote(urlsplit(output_url).path) + ".checkpoint.json")
    try:
        return len(json.loads(path.read_text())["images"])
    except (OSError, ValueError, KeyError):
        return 0


class Preempter(threading.Thread):
    """Every 1-2 s, SIGKILL one running scoring process (its process group) whose run has already
    advanced its shard's checkpoint: the issue's case, where every attempt makes some progress
    (how long a run takes to start is the machine's business, not the retry budget's)."""

    def __init__(self, active: Path, limit: int = 80) -> None:
        super().__init__(daemon=True)
        self.active = active
        self.limit = limit
        self.kills = 0
        self.stop = threading.Event()
        self.rng = random.Random(14)
        self.seen: dict[int, int] = {}  # pid -> checkpoint count when first seen running

    def _eligible(self) -> list[int]:
        pids = []
        for p in self.active.glob("*.json"):
            try:
                rec = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            pid = rec.get("pid")
            if rec.get("state") != "running" or not _alive(pid, rec.get("proc_start")):
                continue
            now = _checkpointed(rec["job"]["output_url"])
            if now > self.seen.setdefault(pid, now):
                pids.append(pid)
        return pids

    def run(self) -> None:
        while not self.stop.is_set() and self.kills < self.limit:
            due = time.monotonic() + self.rng.uniform(1.0, 2.0)
            while not self.stop.wait(0.05):  # watch runs start, kill one once due
                pids = self._eligible()
                if pids and time.monotonic() >= due:
                    try:
                        os.killpg(self.rng.choice(pids), signal.SIGKILL)
                        self.kills += 1
                    except ProcessLookupError:
                        pass
                    break


def test_preempted_every_1_to_2_s_every_image_scored_once_within_1_3x(
        tmp_path: Path, model_dir: Path) -> None:  # noqa: F811
    # the images live beside the service's state folder, never inside it (issue 14: never read)
    root = Path(tempfile.mkdtemp(prefix="preempt-images-")) / "container"
    files = _images(root)
    trace = tmp_path / "scored.txt"
    env = service_env(
        tmp_path, model_dir,
        MDBATCH_SHARD_SIZE=str(SHARD), MDBATCH_LOCAL_WORKERS="2", MDBATCH_MAX_ATTEMPTS="3",
        # a kill every 1-2 s against a scorer that takes ~1-2 s to start here is far beyond any
        # real pre-emption rate: allow the attempts that needs (the budget under test is the 3)
        MDBATCH_MAX_TOTAL_ATTEMPTS="80",
        MDBATCH_CHECKPOINT_EVERY="1", MDBATCH_PYTHON=str(_launcher(tmp_path)),
        MDBATCH_SCORING_DELAY_MS="100", RELIABILITY_SCORE_TRACE=str(trace),
    )
    pre = Preempter(tmp_path / "compute" / "active")
    with EmbeddedHost(APP_DIR, tmp_path / "host", workers=4, env=env) as h:
        r = requests.post(f"{h.base_url}/api/detections", timeout=30,
                          json={"input_container_sas": root.as_uri(), "caller": "alice"})
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        pre.start()
        try:
            doc = follow(r.json()["statusQueryGetUri"], timeout=400)
        finally:
            pre.stop.set()
            pre.join()
        assert doc["runtimeStatus"] == "Completed", doc
        out = doc["output"]
        det = fetch(out["output_file_urls"]["detections"])  # served by the host: read while it runs
    failures = {e["file"]: e.get("failure") for e in det["images"] if e.get("failure")}
    assert failures == {}, f"{len(failures)} images failed, e.g. {next(iter(failures.items()))}"
    assert [e["file"] for e in det["images"]] == files, "every image exactly once"
    assert out["failed_shards"] == 0

    # The pre-emption was real: many kills, and a shard needed more than the 3 attempts of old.
    attempts = Counter()
    for p in (tmp_path / "work" / rid / "jobs").glob("s*-a*.json"):
        s, a = p.stem.split("-a")
        attempts[s] = max(attempts[s], int(a))
    assert pre.kills >= 4, f"only {pre.kills} kills: the test did not pre-empt enough"
    assert max(attempts.values()) > 3, f"no shard needed more than 3 attempts: {dict(attempts)}"

    scored = Counter(trace.read_text().split())
    assert set(scored) == set(files), "every image was scored by a scorer"
    total = sum(scored.values())
    assert total <= 1.3 * N_IMAGES, (
        f"{total} scorings for {N_IMAGES} images ({total / N_IMAGES:.2f}x), "
        f"{pre.kills} kills, attempts {dict(attempts)}, most repeated {scored.most_common(3)}")


class FailsAfterProgress:
    """The real local backend, except that each of the first `doomed` attempts is reported FAILED
    (and its real job cancelled) as soon as the shard's real checkpoint grew by `gain` images."""

    def __init__(self, real: object, work: Path, *, doomed: int, gain: int) -> None:
        self.real, self.work, self.doomed, self.gain = real, work, doomed, gain
        self.jobs: dict[str, tuple[ShardJob, int]] = {}
        self.failed: set[str] = set()

    def checkpointed(self, job: ShardJob) -> int:
        p = self.work / job.request_id / "shards" / f"{job.shard:05d}.result.json.checkpoint.json"
        try:
            return len(json.loads(p.read_text())["images"])
        except (OSError, ValueError, KeyError):
            return 0

    def submit(self, job: ShardJob) -> str:
        jid = self.real.submit(job)
        self.jobs[jid] = (job, self.checkpointed(job))
        return jid

    def status(self, job_id: str) -> JobStatus:
        job, start = self.jobs[job_id]
        if job_id in self.failed:
            return JobStatus(JobState.FAILED, "injected: node lost after progress")
        if job.attempt <= self.doomed and self.checkpointed(job) >= start + self.gain:
            self.real.cancel(job_id)
            self.failed.add(job_id)
            return JobStatus(JobState.FAILED, "injected: node lost after progress")
        return self.real.status(job_id)

    def cancel(self, job_id: str) -> None:
        self.real.cancel(job_id)


def test_failed_attempts_that_advanced_the_checkpoint_do_not_use_up_the_attempts(
        tmp_path: Path, model_dir: Path, dataset: Dataset) -> None:  # noqa: F811
    """Up to five attempts in a row fail, each once it checkpointed another image: with 3 attempts
    allowed the shard still completes (before: it ended failed after 3 attempts)."""
    env = service_env(tmp_path, model_dir, MDBATCH_SHARD_SIZE="100", MDBATCH_LOCAL_WORKERS="1",
                      MDBATCH_MAX_ATTEMPTS="3", MDBATCH_CHECKPOINT_EVERY="1",
                      MDBATCH_SCORING_DELAY_MS="600")  # ~1-2 images per attempt: 15 need many
    with EmbeddedHost(APP_DIR, tmp_path / "host", workers=4, env=env) as h:
        flaky = FailsAfterProgress(compute_from_settings(sv.settings()), tmp_path / "work", doomed=5, gain=1)
        sv.override(compute=flaky)
        try:
            r = requests.post(f"{h.base_url}/api/detections", timeout=30,
                              json={"input_container_sas": dataset.root.as_uri(), "caller": "alice"})
            assert r.status_code == 202, r.text
            doc = follow(r.json()["statusQueryGetUri"], timeout=300)
            assert doc["runtimeStatus"] == "Completed", doc
            det = fetch(doc["output"]["output_file_urls"]["detections"])  # served by the host
        finally:
            sv.override(compute=None)
    assert doc["output"]["failed_shards"] == 0, doc["output"]
    # more failed attempts than the 3 allowed (the last one may have finished before its turn came)
    assert len(flaky.failed) >= 4, f"only {len(flaky.failed)} attempts failed: nothing was proven"
    n = len(flaky.jobs)
    assert sorted(j.attempt for j, _ in flaky.jobs.values()) == list(range(1, n + 1))
    assert n == len(flaky.failed) + 1, "the attempt after the failed ones finished the shard"
    check_results(det, dataset)
