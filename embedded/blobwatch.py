"""Blob triggers: watch a local folder store or a Blob container and call the function once per new blob.

Receipts (function, blob name, etag) live in the state database, so a restart does not call the
function again for a blob it already handled; a changed blob (new etag) triggers again, as in Azure.
A failing call is retried on later polls, up to 5 times, then the blob is marked poison.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

from azure.functions.blob import InputStream

from .appmodel import FunctionInfo
from .store import Store

log = logging.getLogger("embedded")

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class BlobItem:
    name: str  # path inside the container
    etag: str
    length: int
    uri: str


def connection_value(setting: str | None) -> str:
    """The connection setting's value: NAME, then AzureWebJobsNAME (as the host resolves it)."""
    name = setting or "AzureWebJobsStorage"
    for key in (name, f"AzureWebJobs{name}"):
        v = os.environ.get(key)
        if v:
            return v
    raise ValueError(f"blob trigger connection setting '{name}' is not set")


def is_connection_string(value: str) -> bool:
    return "=" in value and (";" in value or value.lower().startswith("usedevelopmentstorage"))


def folder_of(value: str) -> Path:
    if value.startswith("file://"):
        return Path(unquote(urlparse(value).path))
    return Path(value)


def path_pattern(path: str) -> tuple[str, re.Pattern]:
    """'container/dir/{name}.json' -> ('container', regex over the blob name inside the container)."""
    container, _, rest = path.strip("/").partition("/")
    regex = ""
    for tok in re.split(r"(\{[^}]+\})", rest or "{name}"):
        m = re.fullmatch(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", tok)
        regex += f"(?P<{m.group(1)}>.+)" if m else re.escape(tok)
    return container, re.compile("^" + regex + "$")


class FolderSource:
    """FOLDER/CONTAINER/... on disk. A file is seen once its size and mtime were stable for one poll."""

    def __init__(self, root: Path, container: str) -> None:
        self.root = root / container
        self._last: dict[str, tuple[int, int]] = {}

    def list(self) -> Iterator[BlobItem]:
        if not self.root.is_dir():
            return
        seen: dict[str, tuple[int, int]] = {}
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                p = Path(dirpath) / f
                if f.startswith(".") or f.endswith((".tmp", ".partial")):
                    continue
                try:
                    s = p.stat()
                except OSError:
                    continue
                name = p.relative_to(self.root).as_posix()
                sig = (s.st_size, s.st_mtime_ns)
                seen[name] = sig
                if self._last.get(name) == sig:
                    yield BlobItem(name, f"{s.st_mtime_ns:x}-{s.st_size:x}", s.st_size, p.as_uri())
        self._last = seen

    def read(self, item: BlobItem) -> bytes:
        return (self.root / item.name).read_bytes()


class ContainerSource:
    """A Blob container (Azurite or Azure) through azure-storage-blob, imported only when used."""

    def __init__(self, conn: str, container: str) -> None:
        from azure.storage.blob import BlobServiceClient

        self.client = BlobServiceClient.from_connection_string(conn).get_container_client(container)

    def list(self) -> Iterator[BlobItem]:
        try:
            for b in self.client.list_blobs():
                yield BlobItem(
                    b.name, str(b.etag).strip('"'), int(b.size or 0), f"{self.client.url}/{b.name}"
                )
        except Exception as e:  # container missing, emulator not up yet: try again next poll
            if type(e).__name__ != "ResourceNotFoundError":
                log.debug("blob listing failed: %s", e)

    def read(self, item: BlobItem) -> bytes:
        return self.client.download_blob(item.name).readall()


class BlobWatcher:
    """Polls every blob-triggered function's source; runs the function through `invoke`."""

    def __init__(
        self,
        store: Store,
        functions: dict[str, FunctionInfo],
        invoke: Callable[[FunctionInfo, dict], None],
        interval: float = 1.0,
    ) -> None:
        self.store = store
        self.invoke = invoke
        self.interval = interval
        self._stop = threading.Event()
        self._poll_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.watches: list[tuple[FunctionInfo, object, re.Pattern]] = []
        for fi in functions.values():
            if fi.trigger_type != "blobTrigger":
                continue
            container, regex = path_pattern(fi.trigger["path"])
            try:
                value = connection_value(fi.trigger.get("connection"))
            except ValueError as e:  # Azure also leaves such a function unindexed; the rest runs
                log.error("blob trigger %s disabled: %s", fi.name, e)
                continue
            source = (
                ContainerSource(value, container)
                if is_connection_string(value)
                else FolderSource(folder_of(value), container)
            )
            self.watches.append((fi, source, regex))
            log.info("blob trigger %s watches %s", fi.name, fi.trigger["path"])

    def start(self) -> None:
        if self.watches:
            self._thread = threading.Thread(target=self._run, name="embedded-blobs", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:
                log.exception("blob poll failed")
            self._stop.wait(self.interval)

    def poll(self) -> int:
        """One pass over every watch; returns how many functions ran."""
        with self._poll_lock:
            return self._poll()

    def _poll(self) -> int:
        ran = 0
        for fi, source, regex in self.watches:
            for item in list(source.list()):  # type: ignore[attr-defined]
                if self._stop.is_set():
                    return ran
                m = regex.match(item.name)
                if not m:
                    continue
                rec = self.store.query(
                    "SELECT status, attempts FROM receipts WHERE function=? AND blob=? AND etag=?",
                    (fi.name, item.name, item.etag),
                )
                if rec and (rec[0][0] in ("done", "poison")):
                    continue
                attempts = rec[0][1] if rec else 0
                status = "done"
                try:
                    data = source.read(item)  # type: ignore[attr-defined]
                    container = fi.trigger["path"].strip("/").split("/")[0]
                    stream = InputStream(
                        data=data, name=f"{container}/{item.name}", uri=item.uri, length=len(data)
                    )
                    self.invoke(fi, {fi.trigger["name"]: stream, **m.groupdict()})
                    ran += 1
                except FileNotFoundError:
                    continue
                except Exception as e:
                    attempts += 1
                    status = "poison" if attempts >= MAX_ATTEMPTS else "retry"
                    log.warning(
                        "blob function %s failed on %s (attempt %d): %s", fi.name, item.name, attempts, e
                    )
                now = datetime.now(UTC).isoformat()
                with self.store.tx() as db:
                    db.execute(
                        "INSERT OR REPLACE INTO receipts VALUES (?,?,?,?,?,?)",
                        (fi.name, item.name, item.etag, status, attempts, now),
                    )
        return ran
