"""Issue 14, item 4: after a SIGKILL, `mdbatch serve` with the same home and port comes back at once.

What held it back: the port check before starting bound a plain socket without SO_REUSEADDR, and
a killed server leaves its accepted connections in TIME_WAIT (or FIN_WAIT_2) for about 60 s, so
the restart refused the port ("port in use") until the kernel let them go. The test proves the
condition is present (a socket of the dead server lingering on the port) and that the restart
serves anyway, then that the job of the killed service completes with every image once.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import requests
from cli_fixtures import Planted, check_results, cli_cmd, cli_env, free_port, plant_photos, read_banner

from mdbatch.local import REPO_ROOT

# /proc/net/tcp states of a socket the dead server left behind (not LISTEN)
LINGERING = {"04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "0B": "CLOSING"}


def _start_serve(home: Path, port: int, extra: dict[str, str]) -> tuple[subprocess.Popen[str], str, str]:
    """`mdbatch serve --port PORT`; returns (process, url, key) once it printed "Ctrl-C to stop"."""
    # the photos lie beside the home, under the test's folder: that folder is the allowed root
    cmd = cli_cmd("serve", "--port", str(port), "--model", "demo", "--root", str(home.parent))
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT,
                            env=cli_env(home, **extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        url, key, _ = read_banner(proc)
    except AssertionError:
        proc.kill()
        proc.wait()
        raise
    return proc, url, key


def _lingering(port: int) -> list[str]:
    """States of non-listening TCP sockets whose local port is PORT (this network namespace)."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            f = row.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] in LINGERING:
                out.append(LINGERING[f[3]])
    return out


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_killed_mid_job_restarts_at_once_and_finishes(tmp_path: Path, camera_trap_dir: Path) -> None:
    planted: Planted = plant_photos(tmp_path / "photos", camera_trap_dir)
    home = tmp_path / "home"
    port = free_port()
    extra = {"MDBATCH_SCORING_DELAY_MS": "800"}  # ~4 s of scoring: the kill lands mid-job
    proc, url, key = _start_serve(home, port, extra)
    second = None
    try:
        hdr = {"x-functions-key": key}
        keep = requests.Session()  # a connection the server holds open when it dies
        r = keep.post(f"{url}/api/detections", headers=hdr, timeout=30,
                      json={"input_container_sas": str(planted.folder), "model_version": "demo"})
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        deadline = time.monotonic() + 120  # liveness bound only
        st: dict = {}
        while time.monotonic() < deadline:
            st = keep.get(f"{url}/api/detections/{rid}", headers=hdr, timeout=30).json()
            if st.get("stage") == "scoring":
                break
            time.sleep(0.2)
        assert st.get("stage") == "scoring", st
        proc.kill()  # SIGKILL the service only; its scoring child lives on, as after a real crash
        proc.wait()
        keep.close()  # the server closed first: its side of the connection lingers (TIME_WAIT)
        lingering = _lingering(port)
        assert lingering, "the killed server left no socket on its port: the test would prove nothing"

        # The restart must take the port now, while the dead server's sockets still linger.
        second, url2, key2 = _start_serve(home, port, extra)
        assert _lingering(port), "the old sockets went away before the restart: nothing was proven"
        assert url2 == url and key2 == key
        deadline = time.monotonic() + 180  # liveness bound only
        while time.monotonic() < deadline:
            st = requests.get(f"{url2}/api/detections/{rid}", headers=hdr, timeout=30).json()
            if st.get("state") in ("completed", "failed", "canceled"):
                break
            time.sleep(0.3)
        assert st.get("state") == "completed", st
        detections = st["result"]["output_file_urls"]["detections"]
        results = requests.get(detections, timeout=30).json() if detections.startswith("http") else None
        if results is None:
            from urllib.parse import unquote, urlsplit

            results = __import__("json").loads(Path(unquote(urlsplit(detections).path)).read_text())
        check_results(results, planted)
    finally:
        _stop(proc)
        if second is not None:
            _stop(second)
