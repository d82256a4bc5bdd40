"""`mdbatch detect` end to end in a subprocess: embedded host, the real service, local scoring with the
demo (rect) model, on real camera-trap photos with rectangles planted for known answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_fixtures import REPO_ROOT, Planted, check_results, cli_cmd, cli_env, plant_photos, run_cli


@pytest.fixture()
def planted(tmp_path: Path, camera_trap_dir: Path) -> Planted:
    return plant_photos(tmp_path / "photos", camera_trap_dir)


def test_detect_writes_results_summary_and_preview(tmp_path: Path, planted: Planted) -> None:
    home = tmp_path / "home"
    out = tmp_path / "out" / "results.json"
    proc = run_cli("detect", str(planted.folder), "--model", "demo", "-o", str(out), home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    check_results(json.loads(out.read_text()), planted)

    lines = {ln.split()[0] + " " + ln.split()[1] if ln.startswith("with ") else ln.split()[0]: ln.split()
             for ln in proc.stdout.splitlines() if ln.strip() and ln.split()[0] in
             ("images", "with", "empty", "failed")}
    # 5 images; animal on 2 (arc, pheasant), person and vehicle on cfz; idaho empty; broken failed
    assert lines["images"][1] == "5"
    assert lines["with animal"][2] == "2"
    assert lines["with person"][2] == "1"
    assert lines["with vehicle"][2] == "1"
    assert lines["empty"][1] == "1"
    assert lines["failed"][1] == "1"
    assert f"results: {out}" in proc.stdout
    page = out.with_suffix(".html")
    assert f"preview: {page}" in proc.stdout and page.is_file()
    assert "5/5 images" in proc.stdout and "shards 1/1" in proc.stdout
    # finished: nothing left in the resume journal, the service state is in the per-user folder
    assert list((home / "jobs").glob("*.json")) == []
    assert (home / "service" / "durable.sqlite3").is_file()


def _start_detect(planted: Planted, home: Path, out: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(cli_cmd("detect", str(planted.folder), "--model", "demo", "-o", str(out)),
                            cwd=REPO_ROOT, env=cli_env(home, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_journal(home: Path, proc: subprocess.Popen[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = list((home / "jobs").glob("*.json")) if (home / "jobs").is_dir() else []
        if entries:
            return str(json.loads(entries[0].read_text())["request_id"])
        if proc.poll() is not None:
            raise AssertionError("detect ended before submitting: " + proc.stdout.read() + proc.stderr.read())
        time.sleep(0.05)
    raise AssertionError("detect did not submit a request")


def test_rerun_after_a_crash_resumes_the_same_request(tmp_path: Path, planted: Planted) -> None:
    home = tmp_path / "home"
    out = tmp_path / "results.json"
    proc = _start_detect(planted, home, out)
    try:
        rid = _wait_for_journal(home, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: no cleanup of any kind
        proc.communicate(timeout=30)
    assert not out.exists()
    again = run_cli("detect", str(planted.folder), "--model", "demo", "-o", str(out), home=home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming request {rid}" in again.stdout
    assert "submitted" not in again.stdout
    check_results(json.loads(out.read_text()), planted)


def test_ctrl_c_cancels_the_job(tmp_path: Path, planted: Planted) -> None:
    home = tmp_path / "home"
    out = tmp_path / "results.json"
    # a slowed scorer (2 s an image): the job is surely still running when Ctrl-C comes, however
    # loaded the machine is
    proc = _start_detect(planted, home, out, MDBATCH_SCORING_DELAY_MS="2000")
    try:
        rid = _wait_for_journal(home, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stdout + stderr
    assert f"canceled request {rid} (service state: canceled)" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()
    # the service agrees: the job is canceled, and the next run starts afresh
    again = run_cli("detect", str(planted.folder), "--model", "demo", "-o", str(out), home=home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming" not in again.stdout and "submitted" in again.stdout
    assert rid not in again.stdout
