"""Running the service on this machine: the embedded host with local storage and local compute.

`detect` and `serve` both come through here. The host's state (orchestration
database, work files, secrets, keys) lives in the per-user folder so that a
`detect` killed halfway resumes when run again: the durable orchestration is
still in the database, and the CLI's journal remembers which request id the
same folder + model + options started.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdbatch import paths
from mdbatch.errors import CliError

REPO_ROOT = Path(__file__).resolve().parents[1]  # holds function_app.py (the app the host serves)


@dataclass(frozen=True)
class LocalService:
    """A started embedded host: where it listens and the key it wants."""

    base_url: str
    key: str | None
    state_dir: Path


def inbox_dir() -> Path:
    """Folder the embedded blob-upload door watches (FOLDER/CONTAINER/NAME.json)."""
    return paths.home() / "inbox"


def shard_size_for(images: int, workers: int) -> int:
    """Local shards: about 8 per worker (a live progress bar, work spread over workers), 50..2,000."""
    return max(50, min(2000, -(-images // (8 * workers))))


def local_roots(extra: list[Path] | tuple[Path, ...] = ()) -> str:
    """MDBATCH_LOCAL_ROOTS the user's setting plus `extra` (serve --root, detect's folder)."""
    given = [p for p in os.environ.get("MDBATCH_LOCAL_ROOTS", "").split(os.pathsep) if p.strip()]
    return os.pathsep.join(dict.fromkeys([*given, *(str(p.expanduser().resolve()) for p in extra)]))


def service_env(models_dir: Path, default_model: str | None, workers: int,
                shard_size: int | None = None, roots: list[Path] | tuple[Path, ...] = ()) -> dict[str, str]:
    """Settings (adapters/settings.py names) for an offline, one-machine deployment.

    Local jobs are short and polling a local process costs nothing, so the poll interval starts
    at 1 s (Azure's default of 15 s suits GPU jobs that take minutes), and so does the live-progress
    tick (Azure's default: 30 s).
    """
    env = {
        "MDBATCH_STATE_DIR": str(paths.service_dir()),
        "MDBATCH_ALLOW_LOCAL_STORAGE": "true",
        "MDBATCH_COMPUTE_BACKEND": "local",
        "MDBATCH_LOCAL_WORKERS": str(workers),
        "MDBATCH_MODEL_DIR": str(models_dir),
        "MDBATCH_CODE_DIR": str(REPO_ROOT),
        "MDBATCH_PYTHON": sys.executable,
        # the blob-upload door on one machine: request JSON dropped into INBOX/detection-requests/
        "AzureWebJobsStorage": inbox_dir().as_uri(),
        "MDBATCH_POLL_INITIAL_S": "1",
        "MDBATCH_POLL_MAX_S": "5",
        # live progress inside a shard (the scorer's progress file), read every ~1 s at first
        "MDBATCH_PROGRESS_INTERVAL_S": "1",
        # local sources only under these folders (issue 14), never in this per-user folder
        "MDBATCH_LOCAL_ROOTS": local_roots(roots),
        "MDBATCH_PRIVATE_DIRS": str(paths.home()),
    }
    if shard_size:
        env["MDBATCH_SHARD_SIZE"] = str(shard_size)
    if default_model:
        env["MDBATCH_DEFAULT_MODEL"] = default_model
    return env


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Fail early, with the fix, when a fixed port is taken (port 0 = any free port).

    Checked with SO_REUSEADDR, as the server itself binds (asyncio sets it on POSIX): a host that
    was killed leaves its connections in TIME_WAIT for about a minute, which must not keep a
    restart off its port; a live listener still refuses the bind.
    """
    if port == 0:
        return
    with socket.socket() as s:
        if os.name == "posix":  # on Windows SO_REUSEADDR would let two listeners share the port
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                raise CliError(f"port {port} is in use (another mdbatch serve?); pick another with --port, "
                               "or --port 0 for any free port") from None
            raise


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """One embedded host per state folder: a second one would race on the same database."""
    state_dir.mkdir(parents=True, exist_ok=True)
    lock_path = state_dir / "host.lock"
    f = lock_path.open("a+")
    try:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows: no advisory lock; accept the risk
            pass
        except OSError:
            raise CliError(f"another mdbatch detect/serve is using {state_dir}; wait for it to finish, "
                           "or set MDBATCH_HOME to another folder") from None
        yield
    finally:
        f.close()


def read_key(state_dir: Path) -> str | None:
    """The embedded host's function key, from the files it writes in its state folder."""
    try:
        keys: Any = json.loads((state_dir / "keys.json").read_text())
    except (OSError, ValueError):
        return None
    key = keys.get("function") if isinstance(keys, dict) else None
    return key if isinstance(key, str) and key else None


@contextlib.contextmanager
def run_host(port: int, workers: int, models_dir: Path, default_model: str | None,
             log_file: Path | None = None, shard_size: int | None = None,
             roots: list[Path] | tuple[Path, ...] = ()) -> Iterator[LocalService]:
    """Start the embedded host serving this repository's function app; stop it on exit.

    `roots`: folders callers may name as local sources, besides MDBATCH_LOCAL_ROOTS."""
    check_port_free(port)
    state_dir = paths.service_dir()
    env = service_env(models_dir, default_model, workers, shard_size, roots)
    with state_lock(state_dir):
        if log_file is not None:
            _log_to_file(log_file)
        try:
            from embedded import EmbeddedHost
        except ImportError as e:
            raise CliError(f"the embedded host is not installed ({e}); run ./run setup") from None
        # The app reads its settings from the environment (adapters/settings.py); the host's env
        # argument carries them to workers, and setting them here covers an in-process app.
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        host = EmbeddedHost(REPO_ROOT, state_dir, port=port, env=env, require_keys=True)
        try:
            try:
                host.start()
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise CliError(f"port {port} is in use; pick another with --port") from None
                raise
            try:
                yield LocalService(base_url=str(host.base_url).rstrip("/"), key=host.function_key,
                                   state_dir=state_dir)
            finally:
                host.stop()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _log_to_file(log_file: Path) -> None:
    """Keep the host's and the app's logging out of the terminal (progress bar, summary only)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


# --- the detect journal: same folder + model + options -> same request --------------------------

def job_key(folder: Path, model: str, threshold: float | None) -> str:
    """Stable key of a detect command; the journal maps it to the request id it started."""
    spec = json.dumps({"folder": str(folder.resolve()), "model": model, "threshold": threshold},
                      sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:32]


def journal_get(key: str) -> str | None:
    try:
        return str(json.loads((paths.jobs_dir() / f"{key}.json").read_text())["request_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def journal_put(key: str, request_id: str, spec: dict[str, Any]) -> None:
    d = paths.jobs_dir()
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{key}.tmp"
    tmp.write_text(json.dumps({"request_id": request_id, **spec}, indent=1))
    os.replace(tmp, d / f"{key}.json")


def journal_drop(key: str) -> None:
    (paths.jobs_dir() / f"{key}.json").unlink(missing_ok=True)
