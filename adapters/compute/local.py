"""Local compute: `python -m scoring ...` as child processes, at most N at once.

Job records live under STATE_DIR/compute so that a restarted host knows what it ran:
- `active/NAME.json` for queued and running jobs, `done/NAME.json` once a job has ended;
- every backend instance holds an flock on `owners/ID.lock` while it lives. A running record whose
  owner lock is free belongs to a host that died: if its process still runs it is adopted, if it
  ended and the result file exists the job succeeded, otherwise it is queued to run again.
Children run in their own process group (cancel kills the group). Secrets reach them only
through the environment (MDBATCH_SECRETS_FILE, AZURE_STORAGE_CONNECTION_STRING), never argv.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..filelock import exclusive_lock
from ..redaction import redact
from .base import JobState, JobStatus, ShardJob, scoring_args

log = logging.getLogger(__name__)

KILL_GRACE_S = 5.0
# Exit statuses of a scorer stopped from outside: SIGKILL, SIGTERM (when it had no time to save),
# and the scorer's own "interrupted" exit after SIGTERM/SIGINT (scoring.__main__.EXIT_INTERRUPTED).
PREEMPTED_RCS = frozenset({-signal.SIGKILL, -signal.SIGTERM, 143})
# A scorer that stopped because the disk is full is queued again, after a wait that doubles from
# 1 s to 30 s, until there is room: a full disk is nobody's fault in the shard and must not use up
# its attempts (issue 14b). The job reads as queued meanwhile, with the reason.
DISK_FULL_MARKERS = ("No space left on device", "Disk quota exceeded", "database or disk is full")
SPACE_WAIT_FIRST_S = 1.0
SPACE_WAIT_MAX_S = 30.0
LOW_SPACE_BYTES = 1 << 20  # under 1 MiB free counts as full


def url_to_arg(url: str) -> str:
    """file:// URLs become plain paths for the scorer; blob URLs pass through (no SAS in them)."""
    if url.startswith("file://"):
        return unquote(urlsplit(url).path)
    return url


def default_output_exists(url: str) -> bool:
    if url.startswith("file://") or "://" not in url:
        return Path(url_to_arg(url)).is_file()
    return False


def _proc_info(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    return fields[0], int(fields[19])


def _alive(pid: int | None, start: int | None) -> bool:
    if not pid:
        return False
    info = _proc_info(pid)
    if info is None or info[0] in ("Z", "X"):
        return False
    return start is None or info[1] == start


class LocalComputeBackend:
    """ComputeBackend running the scorer as local processes. Use one instance per host process."""

    def __init__(self, state_dir: Path | str, *, workers: int = 1, model_dir: Path | str | None = None,
                 code_dir: Path | str | None = None, python: str | None = None,
                 env: Mapping[str, str] | None = None,
                 output_exists: Callable[[str], bool] | None = None,
                 poll_interval_s: float = 0.5, monitor: bool = True) -> None:
        self.root = Path(state_dir) / "compute"
        self.active = self.root / "active"
        self.done = self.root / "done"
        self.logs = self.root / "logs"
        self.owners = self.root / "owners"
        for d in (self.active, self.done, self.logs, self.owners):
            d.mkdir(parents=True, exist_ok=True)
        self.workers = max(1, workers)
        self.model_dir = Path(model_dir) if model_dir else Path(state_dir) / "models"
        self.code_dir = Path(code_dir) if code_dir else Path(__file__).resolve().parents[2]
        self.python = python or sys.executable
        self.extra_env = dict(env or {})
        self.output_exists = output_exists or default_output_exists
        self.poll_interval_s = poll_interval_s
        self.owner = uuid.uuid4().hex
        owner_lock = self.owners / f"{self.owner}.lock"
        self._owner_fd: int | None = os.open(owner_lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._owner_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._mutex = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pump()
        if monitor:
            self._thread = threading.Thread(target=self._monitor, name="mdb-local-compute", daemon=True)
            self._thread.start()

    # --- public API ----------------------------------------------------------
    def submit(self, job: ShardJob) -> str:
        name = job.name
        with self._locked():
            if self._read(name) is None:
                now = time.time()
                self._write_active(name, {
                    "name": name, "job": asdict(job), "state": "queued", "reason": None,
                    "pid": None, "proc_start": None, "owner": None, "runs": 0, "returncode": None,
                    "created": now, "updated": now, "cancel_requested": False, "kill_at": None,
                })
            self._pump_locked()
        return name

    def status(self, job_id: str) -> JobStatus:
        with self._locked():
            self._pump_locked()
            rec = self._read(job_id)
        if rec is None:
            return JobStatus(JobState.FAILED, f"no such job {job_id!r}")
        if rec["state"] in ("queued", "running") and rec.get("cancel_requested"):
            return JobStatus(JobState.CANCELLED, "cancel requested")
        return JobStatus(JobState(_STATE_MAP[rec["state"]]), rec.get("reason"))

    def cancel(self, job_id: str) -> None:
        with self._locked():
            rec = self._read(job_id)
            if rec is None or rec["state"] not in ("queued", "running"):
                return
            if rec["state"] == "queued":
                rec.update(state="cancelled", reason="cancelled before it started")
                self._finish(rec)
                return
            if not rec.get("cancel_requested"):
                rec.update(cancel_requested=True, kill_at=time.time() + KILL_GRACE_S)
                self._write_active(job_id, rec)
                self._signal(rec, signal.SIGTERM)
            self._pump_locked()

    def record(self, job_id: str) -> dict[str, Any] | None:
        """The raw job record (for tests and diagnostics)."""
        return self._read(job_id)

    def pump(self) -> None:
        """Reap ended children, recover orphaned jobs, start queued jobs while slots are free."""
        with self._locked():
            self._pump_locked()

    def close(self, *, kill_children: bool = False) -> None:
        """Stop monitoring and release ownership; children keep running unless asked to kill them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if kill_children:
            with self._locked():
                for name in list(self._procs):
                    rec = self._read(name)
                    if rec is not None:
                        self._signal(rec, signal.SIGKILL)
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None

    def __enter__(self) -> LocalComputeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -----------------------------------------------------------
    def _monitor(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.pump()
            except Exception:  # keep monitoring; the next status call reports problems
                log.exception("local compute monitor failed")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex, exclusive_lock(self.root / ".lock"):
            yield

    def _read(self, name: str) -> dict[str, Any] | None:
        if "/" in name or not name:
            return None
        for folder in (self.active, self.done):
            try:
                return json.loads((folder / f"{name}.json").read_text())
            except FileNotFoundError:
                continue
        return None

    def _write(self, path: Path, rec: dict[str, Any]) -> None:
        rec["updated"] = time.time()
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        os.replace(tmp, path)

    def _write_active(self, name: str, rec: dict[str, Any]) -> None:
        self._write(self.active / f"{name}.json", rec)

    def _finish(self, rec: dict[str, Any]) -> None:
        name = rec["name"]
        self._write(self.done / f"{name}.json", rec)
        (self.active / f"{name}.json").unlink(missing_ok=True)
        self._procs.pop(name, None)

    def _owner_alive(self, owner: str | None) -> bool:
        if not owner:
            return False
        if owner == self.owner:
            return True
        path = self.owners / f"{owner}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)  # the owner is gone: tidy its lock file
        return False

    def _signal(self, rec: dict[str, Any], sig: signal.Signals) -> None:
        if _alive(rec.get("pid"), rec.get("proc_start")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(rec["pid"], sig)

    def _pump_locked(self) -> None:
        running = 0
        queued: list[dict[str, Any]] = []
        for path in self.active.glob("*.json"):
            try:
                rec = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if rec["state"] == "queued":
                queued.append(rec)
            elif rec["state"] == "running" and self._check_running(rec):
                running += 1
        queued.sort(key=lambda r: (r["created"], r["name"]))
        now = time.time()
        for rec in queued:
            if running >= self.workers:
                break
            if float(rec.get("not_before") or 0) > now:
                continue  # waiting for disk space
            self._start(rec)
            running += 1

    def _check_running(self, rec: dict[str, Any]) -> bool:
        """Update one running record; True while it still occupies a slot."""
        name = rec["name"]
        proc = self._procs.get(name) if rec.get("owner") == self.owner else None
        if proc is not None:
            rc = proc.poll()
            if rc is None:
                self._maybe_kill(rec)
                return True
            self._ended(rec, rc)
            return False
        if rec.get("owner") != self.owner and self._owner_alive(rec.get("owner")):
            return True  # another live host runs it
        # Owned by a dead host, or adopted by us without a Popen handle: judge by /proc and the result.
        if _alive(rec.get("pid"), rec.get("proc_start")):
            if rec.get("owner") != self.owner:
                rec["owner"] = self.owner
                self._write_active(name, rec)
                log.info("adopted running job %s (pid %s)", name, rec.get("pid"))
            self._maybe_kill(rec)
            return True
        self._ended(rec, None)
        return False

    def _maybe_kill(self, rec: dict[str, Any]) -> None:
        if rec.get("cancel_requested") and rec.get("kill_at") and time.time() >= rec["kill_at"]:
            self._signal(rec, signal.SIGKILL)

    def _ended(self, rec: dict[str, Any], rc: int | None) -> None:
        """A process ended; rc is None when it was not our child (exit status unknown)."""
        job = rec["job"]
        rec["pid"] = None
        rec["returncode"] = rc
        if rec.get("cancel_requested"):
            rec.update(state="cancelled", reason="cancelled")
        elif rc == 0 or (rc is None and self.output_exists(job["output_url"])):
            if self.output_exists(job["output_url"]):
                rec.update(state="succeeded", reason=None)
            else:
                rec.update(state="failed", reason="the scorer exited 0 but wrote no output")
        elif rc is None:
            # Its host died and so did it, without a result: run it again (the scorer resumes
            # from its checkpoint, so no image is scored twice in the result).
            rec.update(state="queued", reason="re-run after host restart", owner=None)
            self._write_active(rec["name"], rec)
            log.warning("job %s died with its host; queued again", rec["name"])
            return
        elif rc in PREEMPTED_RCS:
            # Stopped from outside (a pre-emption, the OOM killer, an operator), not by its own
            # error: the orchestrator resubmits without charging the shard an attempt.
            why = f"the scorer was killed by signal {-rc}" if rc < 0 else "the scorer was interrupted"
            rec.update(state="preempted", reason=why)
        elif rc < 0:
            rec.update(state="failed", reason=f"the scorer was killed by signal {-rc}")
        elif (full := self._disk_full(rec)) is not None:
            waits = int(rec.get("space_waits") or 0) + 1
            delay = min(SPACE_WAIT_MAX_S, SPACE_WAIT_FIRST_S * 2 ** (waits - 1))
            rec.update(state="queued", reason=f"waiting for disk space ({full})", owner=None,
                       space_waits=waits, not_before=time.time() + delay)
            self._write_active(rec["name"], rec)
            self._procs.pop(rec["name"], None)
            log.warning("job %s stopped on a full disk; again in %.0f s", rec["name"], delay)
            return
        else:
            rec.update(state="failed", reason=self._stderr_tail(rec["name"]) or f"the scorer exited {rc}")
        self._finish(rec)

    def _stderr_tail(self, name: str) -> str | None:
        path = self.logs / f"{name}.err"
        try:
            with open(path, "rb") as fh:
                fh.seek(max(0, path.stat().st_size - 4096))
                lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except FileNotFoundError:
            return None
        return redact(lines[-1])[:500] if lines else None

    def _disk_full(self, rec: dict[str, Any]) -> str | None:
        """Why a failed run looks like a full disk: its stderr says so, or (when it could not even
        say so) the file systems of its output and of our records have almost no room left."""
        said = self._stderr_marker(rec, DISK_FULL_MARKERS)
        if said is not None:
            return said
        out = url_to_arg(rec["job"]["output_url"])
        for folder in ([Path(out).parent] if "://" not in out else []) + [self.root]:
            try:
                st = os.statvfs(folder)
            except OSError:
                continue
            if st.f_bavail * st.f_frsize < LOW_SPACE_BYTES:
                return f"{folder} has {st.f_bavail * st.f_frsize} bytes free"
        return None

    def _stderr_marker(self, rec: dict[str, Any], markers: tuple[str, ...]) -> str | None:
        """The first of `markers` in the end of what the job's last run wrote to stderr, or None."""
        path = self.logs / f"{rec['name']}.err"
        try:
            with open(path, "rb") as fh:
                fh.seek(max(int(rec.get("err_offset") or 0), path.stat().st_size - 4096))
                tail = fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        return next((m for m in markers if m in tail), None)

    def model_path(self, model: str) -> str:
        """A model version name -> MODEL_DIR/NAME.onnx; an existing .onnx path is used as given."""
        if model.endswith(".onnx") and Path(model).is_absolute():
            return model
        return str(self.model_dir / f"{model}.onnx")

    def command(self, job: ShardJob) -> list[str]:
        # issue 12: a classifier version name -> MODEL_DIR/classifiers/NAME.onnx
        classifier = (str(self.model_dir / "classifiers" / f"{job.classifier}.onnx")
                      if job.classifier else None)
        return [self.python, "-m", "scoring", *scoring_args(
            job, model=self.model_path(job.model), input_=url_to_arg(job.manifest_url),
            output=url_to_arg(job.output_url), classifier=classifier)]

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start(self, rec: dict[str, Any]) -> None:
        job = ShardJob(**rec["job"])
        name = rec["name"]
        out_path = url_to_arg(job.output_url)
        if "://" not in out_path:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.out", "ab") as out, open(self.logs / f"{name}.err", "ab") as err:
            err_offset = err.tell()  # where this run's stderr begins
            try:
                proc = subprocess.Popen(
                    self.command(job), cwd=self.code_dir, env=self._child_env(), stdin=subprocess.DEVNULL,
                    stdout=out, stderr=err, start_new_session=True, close_fds=True,
                )
            except OSError as exc:
                rec.update(state="failed", reason=f"could not start the scorer: {exc}")
                self._finish(rec)
                return
        info = _proc_info(proc.pid)
        try:
            rec.update(state="running", pid=proc.pid, proc_start=info[1] if info else None, owner=self.owner,
                       runs=int(rec.get("runs", 0)) + 1, reason=None, err_offset=err_offset)
            self._write_active(name, rec)
        except OSError:
            # Unrecorded, it would be started again: stop it (a full disk, most likely; retried later).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        self._procs[name] = proc
        log.info("started job %s (pid %s, run %s)", name, proc.pid, rec["runs"])


_STATE_MAP = {
    "queued": "queued", "running": "running", "succeeded": "succeeded",
    "failed": "failed", "cancelled": "cancelled", "preempted": "preempted",
}
