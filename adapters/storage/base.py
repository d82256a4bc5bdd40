"""The Store interface (see docs/contracts.md) and helpers shared by its implementations."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from ..errors import AdapterError


@runtime_checkable
class Store(Protocol):
    """One container (+prefix) or one local folder. Names are relative to the store root."""

    url: str

    def list(self, prefix: str = "", extensions: Iterable[str] | None = None,
             limit: int | None = None) -> Iterator[str]: ...
    def read_bytes(self, name: str) -> bytes: ...
    def write_bytes(self, name: str, data: bytes, *, overwrite: bool = True) -> None: ...
    def write_json(self, name: str, obj: Any, *, overwrite: bool = True) -> None: ...
    def exists(self, name: str) -> bool: ...
    def delete(self, name: str) -> None: ...
    def download_link(self, name: str, expiry: timedelta) -> str: ...
    def child_url(self, name: str) -> str: ...


def check_name(name: str) -> str:
    """Refuse names that could escape the store root or that are not relative paths."""
    if not isinstance(name, str) or not name:
        raise AdapterError("an object name must be a non-empty string")
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise AdapterError(f"invalid object name {name!r}: must be a relative path with forward slashes")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise AdapterError(f"invalid object name {name!r}: empty, '.' or '..' segment")
    return name


def check_prefix(prefix: str) -> str:
    """A listing prefix is a plain string prefix, but never with '.'/'..' segments or a leading '/'."""
    if prefix.startswith("/") or "\\" in prefix or any(p in (".", "..") for p in prefix.split("/")):
        raise AdapterError(f"invalid prefix {prefix!r}: must be relative, without '.' or '..' segments")
    return prefix


def normalize_extensions(extensions: Iterable[str] | None) -> tuple[str, ...] | None:
    """`["jpg", ".PNG"]` -> `(".jpg", ".png")`; None means no filter."""
    if extensions is None:
        return None
    if isinstance(extensions, str):
        extensions = [extensions]
    out = tuple(("." + e.lstrip(".")).lower() for e in extensions if e)
    return out or None


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
