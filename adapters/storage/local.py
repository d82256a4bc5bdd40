"""A local folder as a Store: atomic writes by temp file + rename, file:// links."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import AlreadyExistsError, NotFoundError
from .base import check_name, check_prefix, json_bytes, normalize_extensions

_TMP_MARK = ".mdbtmp-"


class LocalStore:
    """Files under one root folder. The root is created on first write."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({self.url!r})"

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*check_name(name).split("/"))

    def _inside(self, path: Path) -> Path:
        """Refuse a path that a symlink leads out of the root (reading the host's own files)."""
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise NotFoundError(f"{path.name!r} leads outside {self.url}")
        return path

    def list(self, prefix: str = "", extensions: Iterable[str] | None = None,
             limit: int | None = None) -> Iterator[str]:
        """Walk lazily (one folder at a time) in the order a blob listing would give."""
        exts = normalize_extensions(extensions)
        check_prefix(prefix)
        if limit is not None and limit <= 0:
            return
        # Start the walk at the deepest folder the prefix names completely.
        head, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*head.split("/")) if head else self.root
        base = head + "/" if head else ""
        count = 0
        for rel in self._walk(start, base):
            if not rel.startswith(prefix):
                continue
            if exts is not None and not rel.lower().endswith(exts):
                continue
            yield rel
            count += 1
            if limit is not None and count >= limit:
                return

    def _walk(self, folder: Path, base: str) -> Iterator[str]:
        try:
            # Sort folders as "name/" so the order equals a blob listing's (full names, code points).
            entries = sorted(os.scandir(folder),
                             key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if _TMP_MARK in entry.name:
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), base + entry.name + "/")
            elif entry.is_file(follow_symlinks=False):
                yield base + entry.name

    def read_bytes(self, name: str) -> bytes:
        try:
            return self._inside(self._path(name)).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"{name!r} not found in {self.url}") from None

    def read_head(self, name: str, size: int) -> tuple[bytes, bool]:
        """The first `size` bytes and whether that is the whole file (a cheap look at a big list)."""
        path = self._inside(self._path(name))
        if not path.is_file():  # a folder, a FIFO or a device is no list (and a FIFO would block)
            raise NotFoundError(f"{name!r} not found in {self.url}")
        try:
            with open(path, "rb") as fh:
                data = fh.read(size + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"{name!r} not found in {self.url}") from None
        return data[:size], len(data) <= size

    def write_bytes(self, name: str, data: bytes, *, overwrite: bool = True) -> None:
        """Write to a temp file in the same folder, then rename (or hard-link for write-once)."""
        path = self._inside(self._path(name))  # before mkdir: a symlinked folder must not carry it out
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}{_TMP_MARK}{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # fails atomically when the target exists
                except FileExistsError:
                    raise AlreadyExistsError(f"{name!r} already exists in {self.url}") from None
        finally:
            tmp.unlink(missing_ok=True)

    def write_json(self, name: str, obj: Any, *, overwrite: bool = True) -> None:
        self.write_bytes(name, json_bytes(obj), overwrite=overwrite)

    def _escapes(self, path: Path) -> bool:
        return not path.resolve().is_relative_to(self.root.resolve())

    def exists(self, name: str) -> bool:
        path = self._path(name)
        return not self._escapes(path) and path.is_file()

    def delete(self, name: str) -> None:
        """Idempotent: deleting a missing file is not an error. Nothing outside the root is deleted."""
        path = self._path(name)
        if not self._escapes(path):
            path.unlink(missing_ok=True)

    def download_link(self, name: str, expiry: timedelta) -> str:
        """A file URL (no expiry on a local disk)."""
        path = self._inside(self._path(name))
        if not path.is_file():
            raise NotFoundError(f"{name!r} not found in {self.url}")
        return path.as_uri()

    def child_url(self, name: str) -> str:
        return self._path(name).as_uri()
