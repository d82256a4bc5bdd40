"""Issue 14, item 3: a storage fault under the host never leaves a job stuck.

The state database fills up mid-job (real SQLite: its page limit is lowered to the pages it has,
so writes fail with "database or disk is full"), then another process holds its write lock
("database is locked"). While that lasts the job's status says it is not moving and why; once
storage is back the job completes with every image exactly once, and the history holds every
task exactly once (each episode's transaction rolled back whole, nothing replayed twice).

Before: the dispatcher logged the error and went on with an instance model that already held the
failed episode's changes (and, when COMMIT itself failed, with a transaction left open), so the
job stayed `running` for good, even after space was freed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import requests

from embedded import EmbeddedHost
from embedded.health import storage_error
from tests.service_fixtures import APP_DIR, Dataset, check_results, dataset, model_dir, service_env  # noqa: F401
from tests.test_service_e2e import fetch, follow


def _until(what: str, cond: Callable[[], object], timeout: float = 90) -> object:
    deadline = time.monotonic() + timeout  # liveness bound only
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _duplicates(store_path: Path) -> list[str]:
    """Tasks scheduled or completed more than once in any instance's history."""
    db = sqlite3.connect(store_path)
    try:
        rows = db.execute("SELECT instance_id, event FROM history").fetchall()
    finally:
        db.close()
    seen: Counter[tuple[str, str, int]] = Counter()
    for iid, raw in rows:
        e = json.loads(raw)
        if e["EventType"] in (4, 7, 10):  # scheduled, sub-orchestration created, timer created
            seen[(iid, "scheduled", e["EventId"])] += 1
        elif e["EventType"] in (5, 6, 8, 9):
            seen[(iid, "completed", e["TaskScheduledId"])] += 1
        elif e["EventType"] == 11:
            seen[(iid, "fired", e["TimerId"])] += 1
    return [f"{k} x{n}" for k, n in seen.items() if n > 1]


def test_state_database_full_then_locked_mid_job_then_back(
        tmp_path: Path, model_dir: Path, dataset: Dataset) -> None:  # noqa: F811
    env = service_env(tmp_path, model_dir, MDBATCH_STALL_SECONDS="1", MDBATCH_PROGRESS_INTERVAL_S="0.5",
                      MDBATCH_SCORING_DELAY_MS="300", MDBATCH_LOCAL_WORKERS="2")
    with EmbeddedHost(APP_DIR, tmp_path / "host", workers=4, env=env) as h:
        assert h.engine is not None
        store = h.engine.store
        r = requests.post(f"{h.base_url}/api/detections", timeout=30,
                          json={"input_container_sas": dataset.root.as_uri(), "caller": "alice"})
        assert r.status_code == 202, r.text
        rid, status_url = r.json()["id"], r.json()["statusQueryGetUri"]
        curated = f"{h.base_url}/api/detections/{rid}?caller=alice"

        def status() -> dict:
            return requests.get(curated, timeout=60).json()

        _until("scoring", lambda: status().get("stage") == "scoring")

        # 1. the disk is full: SQLite may not grow the database by a single page
        with store.lock:
            pages = store._db.execute("PRAGMA page_count").fetchone()[0]
            store._db.execute(f"PRAGMA max_page_count={pages}")
        _until("a disk-full error", lambda: any("full" in r for r in h.engine.health.reasons))
        stuck = _until("the status to report the stall",
                       lambda: (s := status()).get("stalled") and "full" in s.get("message", "") and s)
        assert stuck["state"] == "running", stuck
        assert "host storage: state database: database or disk is full" in stuck["message"], stuck
        with store.lock:
            store._db.execute("PRAGMA max_page_count=1073741823")  # space is back

        # 2. another process holds the write lock for a while
        other = sqlite3.connect(store.path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            _until("a locked error", lambda: any("locked" in r for r in h.engine.health.reasons))
        finally:
            other.execute("ROLLBACK")
            other.close()

        doc = follow(status_url, timeout=300)
        assert doc["runtimeStatus"] == "Completed", doc
        check_results(fetch(doc["output"]["output_file_urls"]["detections"]), dataset)
        after = status()
        assert after["state"] == "completed" and not after.get("stalled"), after
        assert h.engine.health.fault is None
    assert _duplicates(store.path) == []


def test_storage_errors_are_told_apart_from_other_errors(tmp_path: Path) -> None:
    import errno

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
    assert storage_error(full) == f"No space left on device: {tmp_path / 'x'}"
    try:
        try:
            raise full
        except OSError as e:
            raise RuntimeError("could not write the manifest") from e
    except RuntimeError as wrapped:
        assert storage_error(wrapped) is not None  # found through the chain
    locked = sqlite3.OperationalError("database is locked")
    assert storage_error(locked) == "state database: database is locked"
    assert storage_error(sqlite3.OperationalError("no such table: x")) is None
    assert storage_error(OSError(errno.ENOENT, "No such file")) is None
    assert storage_error(ValueError("bad input")) is None


def test_stall_is_judged_against_the_expected_tick_gap() -> None:
    from datetime import UTC, datetime, timedelta

    from batch.status import curated_status, stalled

    t0 = datetime(2020, 1, 1, tzinfo=UTC)

    def doc(ran_s: float, quiet_s: float, **custom: object) -> tuple[dict, datetime]:
        updated = t0 + timedelta(seconds=ran_s)
        return ({"runtimeStatus": "Running", "instanceId": "r1",
                 "input": {"options": {"stall_seconds": 600, "progress_interval_s": 30}},
                 "customStatus": {"stage": "scoring", **custom},
                 "createdTime": t0.isoformat(), "lastUpdatedTime": updated.isoformat()},
                updated + timedelta(seconds=quiet_s))

    assert stalled(*doc(60, 500)) is None  # quiet, but under the limit
    assert "no update at stage scoring" in (stalled(*doc(60, 700)) or "")
    # 8 h in, ticks come every hour (1/8 of the time run): an hour and a bit of quiet is normal
    assert stalled(*doc(8 * 3600, 3600 + 300)) is None
    assert stalled(*doc(8 * 3600, 3600 + 700)) is not None
    fault = {"reason": "host storage: state database: database or disk is full", "since": "T"}
    why = stalled(*doc(60, 700, hostFault=fault)) or ""
    assert why.startswith("no progress for 700 s: host storage: state database: database or disk is full")
    d, _ = doc(60, 10**6)
    assert "stalled" not in curated_status({**d, "runtimeStatus": "Completed", "output": {}})
    assert curated_status(d)["stalled"] is True  # now: years after 2020-01-01
    no_option = {**d, "input": {"options": {}}}
    assert "stalled" not in curated_status(no_option)  # requests started before the setting
