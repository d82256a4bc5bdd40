"""Where the CLI keeps its per-user state and caches (platformdirs-like, no extra dependency)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")  # the service's own list (batch.planning)


def home() -> Path:
    """$MDBATCH_HOME, else the per-user state folder (~/.local/state/mdbatch on Linux)."""
    env = os.environ.get("MDBATCH_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "mdbatch"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "mdbatch"
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "mdbatch"


def service_dir() -> Path:
    """State of the embedded service: orchestration database, work files, secrets, keys."""
    return home() / "service"


def models_dir() -> Path:
    """ONNX models the embedded service scores with (MDBATCH_MODEL_DIR)."""
    return home() / "models"


def download_dir() -> Path:
    """Downloaded checkpoints (.pt/.onnx), kept so a conversion can be redone without network."""
    return home() / "downloads"


def jobs_dir() -> Path:
    """The CLI's journal: which request id a given `detect` command started (for resume)."""
    return home() / "jobs"


def count_images(folder: Path, limit: int | None = None) -> int:
    """Images the service will find under folder (same extensions), stopping at limit."""
    n = 0
    for _root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if f.lower().endswith(IMAGE_EXTENSIONS):
                n += 1
                if limit is not None and n >= limit:
                    return n
    return n
