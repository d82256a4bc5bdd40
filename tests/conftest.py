"""Shared fixtures: real servers (Azurite) and the shared camera-trap photos."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
CAMERA_TRAP_DIR = SHARED_DIR / "testdata" / "camera-traps"
AZURITE_BIN = REPO_ROOT / ".tools" / "node_modules" / ".bin" / "azurite"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass(frozen=True)
class Azurite:
    blob_endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1
    connection_string: str
    account_name: str = "devstoreaccount1"
    account_key: str = AZURITE_KEY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"Azurite did not answer on port {port} within {timeout}s")


def _endpoint_from_connection(conn: str) -> str:
    parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
    return parts["BlobEndpoint"].rstrip("/")


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A running Azurite: the one CI started, or one started here. Never skipped."""
    conn = os.environ.get("MDBATCH_TEST_AZURITE_CONNECTION")
    if conn:
        yield Azurite(blob_endpoint=_endpoint_from_connection(conn), connection_string=conn)
        return
    if not AZURITE_BIN.exists():
        raise RuntimeError(f"Azurite is not installed at {AZURITE_BIN}; run ./run setup")
    port = _free_port()
    location = tempfile.mkdtemp(prefix="azurite-")
    proc = subprocess.Popen(
        [str(AZURITE_BIN), "--silent", "--location", location, "--skipApiVersionCheck", "--loose",
         "--blobPort", str(port), "--queuePort", str(_free_port()), "--tablePort", str(_free_port())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"
        conn = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
        )
        yield Azurite(blob_endpoint=endpoint, connection_string=conn)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(location, ignore_errors=True)


@pytest.fixture(scope="session")
def camera_trap_dir() -> Path:
    """The real camera-trap photos from ../shared/testdata (a hard error when missing)."""
    if not CAMERA_TRAP_DIR.is_dir():
        raise RuntimeError(f"shared test photos missing: {CAMERA_TRAP_DIR}")
    return CAMERA_TRAP_DIR
