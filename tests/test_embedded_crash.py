"""Crash recovery: SIGKILL a subprocess host during a fan-out, restart it on the same state dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.embedded_fixtures import SAMPLE_APP, wait_done, wait_for

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(state: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "SAMPLE_BLOBS"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embedded",
            "--app-dir",
            str(SAMPLE_APP),
            "--state",
            str(state),
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "WARNING",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # noqa: SIM115 (the child keeps it open)
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"host exited early: {log.read_text()[-2000:]}")
        try:
            return requests.get(f"{base}/admin/host/status", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up, timeout=30)
    return proc


def test_sigkill_during_fan_out_then_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "host.log"
    n = 60
    proc = _spawn(state, port, log)
    try:
        r = requests.post(
            f"{base}/api/orchestrators/crash_fan_out", json={"n": n, "seconds": 0.05}, timeout=10
        )
        assert r.status_code == 202
        body = r.json()
        status_url = body["statusQueryGetUri"]

        # kill once some, but not all, activity results are in the history
        def some_done() -> bool:
            h = requests.get(status_url + "&showHistory=true", timeout=5).json().get("historyEvents", [])
            return sum(e["EventType"] == "TaskCompleted" for e in h) >= 5

        wait_for(some_done, timeout=30, interval=0.02)
        s = requests.get(status_url, timeout=5).json()
        assert s["runtimeStatus"] == "Running" and s["customStatus"] == "working"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

        proc = _spawn(state, port, log)  # same state, same port: the status URL stays valid
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)  # and once more, right after the restart
        proc.wait(timeout=10)

        proc = _spawn(state, port, log)
        s = wait_done(status_url, timeout=90)
        assert s["runtimeStatus"] == "Completed", s
        assert s["output"] == {"results": list(range(n)), "child": 5}
        hist = requests.get(status_url + "&showHistory=true", timeout=5).json()["historyEvents"]
        completed = [e["ScheduledId"] for e in hist if e["EventType"] == "TaskCompleted"]
        assert sorted(completed) == list(range(n)) and len(completed) == n  # none lost, none twice
        scheduled = [e["EventId"] for e in hist if e["EventType"] == "TaskScheduled"]
        assert len(scheduled) == n
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
