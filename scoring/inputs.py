"""INPUT -> the images to score and how to fetch each one.

INPUT may be a local folder (recursive), a JSON list (strings or
``[path, meta]`` pairs) or text list (one path/URL a line), or a shard manifest
(``mdbatch-shard/1``, see docs/contracts.md) as a path, ``file://`` or blob URL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .storage import (
    BlobContainer,
    StorageError,
    fetch_url,
    file_url_to_path,
    is_url,
    read_location,
    redact,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
SHARD_FORMAT = "mdbatch-shard/1"


class InputError(Exception):
    """An INPUT that cannot be read or understood."""


@dataclass(frozen=True)
class ImageItem:
    file: str  # as it appears in the results
    meta: Any = None


@dataclass
class ImageSource:
    """The items to score plus a thread-safe ``fetch(file) -> bytes``."""

    items: list[ImageItem]
    fetch: Callable[[str], bytes]
    description: str
    extra: dict[str, Any] = field(default_factory=dict)


def _folder_source(root: Path) -> ImageSource:
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in filenames:
            if fn.lower().endswith(IMAGE_EXTENSIONS):
                rel = (Path(dirpath) / fn).relative_to(root).as_posix()
                files.append(rel)
    files.sort()

    def fetch(name: str) -> bytes:
        return (root / name).read_bytes()

    return ImageSource([ImageItem(f) for f in files], fetch, f"folder {root}")


def _list_entries(raw: bytes, loc: str) -> list[ImageItem]:
    text = raw.decode("utf-8-sig")
    stripped = text.lstrip()
    items: list[ImageItem] = []
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InputError(f"image list {loc} is not valid JSON: {e}") from None
        for entry in data:
            if isinstance(entry, str):
                items.append(ImageItem(entry))
            elif (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                items.append(ImageItem(entry[0], entry[1]))
            else:
                raise InputError(f"image list {loc}: entries must be strings or [path, meta] pairs")
    else:
        items = [ImageItem(line.strip()) for line in text.splitlines() if line.strip()]
    seen: set[str] = set()
    out = []
    for it in items:  # an image listed twice is scored once
        if it.file not in seen:
            seen.add(it.file)
            out.append(it)
    return out


def _list_source(raw: bytes, loc: str) -> ImageSource:
    items = _list_entries(raw, loc)
    base = None if is_url(loc) and not loc.startswith("file://") else (
        file_url_to_path(loc) if loc.startswith("file://") else Path(loc)).parent

    def fetch(name: str) -> bytes:
        if name.startswith(("http://", "https://")):
            return fetch_url(name)
        if name.startswith("file://"):
            return file_url_to_path(name).read_bytes()
        p = Path(name)
        if not p.is_absolute():
            if base is None:
                raise StorageError("relative paths need a local image list")
            p = base / p
        return p.read_bytes()

    return ImageSource(items, fetch, f"image list {redact(loc)}")


def _check_relative(name: str) -> str:
    """A manifest image name relative to its source: never absolute, never a '..' segment."""
    if not name or name.startswith("/") or "\x00" in name \
            or any(part == ".." for part in name.split("/")):
        raise StorageError("the name leads outside the source")
    return name


def _manifest_source(data: dict[str, Any], loc: str) -> ImageSource:
    images = data.get("images")
    if not isinstance(images, list) or not all(isinstance(x, str) for x in images):
        raise InputError(f"shard manifest {loc}: 'images' must be a list of strings")
    meta = data.get("meta") or {}
    items = [ImageItem(f, meta.get(f)) for f in dict.fromkeys(images)]
    source = data.get("source")
    extra = {"request_id": data.get("request_id"), "shard": data.get("shard")}
    if source is None:  # use_url: every entry is a full URL
        return ImageSource(items, fetch_url, f"shard manifest {loc} (URLs)", extra)
    if not isinstance(source, dict) or not isinstance(source.get("url"), str):
        raise InputError(f"shard manifest {loc}: 'source' must be null or {{url, secret_ref}}")
    url: str = source["url"]
    if url.startswith("file://") or not is_url(url):
        root = file_url_to_path(url) if url.startswith("file://") else Path(url)
        if not root.is_dir():
            raise InputError(f"shard manifest {loc}: source folder {root} does not exist")

        real_root = root.resolve()

        def fetch_local(name: str) -> bytes:
            path = root / _check_relative(name)
            if not path.resolve().is_relative_to(real_root):  # a symlink out of the source folder
                raise StorageError("the name leads outside the source")
            return path.read_bytes()

        return ImageSource(items, fetch_local, f"shard manifest {loc} -> {root}", extra)
    try:
        container = BlobContainer(url, source.get("secret_ref"))
    except StorageError:
        raise
    except Exception as e:
        raise InputError(f"shard manifest {loc}: cannot open source container: {type(e).__name__}") from None

    def fetch_blob(name: str) -> bytes:
        return container.read_bytes(_check_relative(name))

    return ImageSource(items, fetch_blob, f"shard manifest {loc} -> {container.url}", extra)


def open_input(inp: str) -> ImageSource:
    """Resolve INPUT (folder, list, shard manifest) or raise :class:`InputError`/``StorageError``."""
    orig = inp
    local = file_url_to_path(inp) if inp.startswith("file://") else (None if is_url(inp) else Path(inp))
    if local is not None and local.is_dir():
        return _folder_source(local)
    if local is not None and not local.exists():
        raise InputError(f"input not found: {local}")
    raw = read_location(inp)
    inp = redact(inp)  # from here on only for messages
    text_start = raw[:64].decode("utf-8-sig", errors="replace").lstrip()
    if text_start.startswith("{"):
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except ValueError as e:
            raise InputError(f"input {inp} is not valid JSON: {e}") from None
        if data.get("format") not in (None, SHARD_FORMAT):
            raise InputError(f"input {inp}: unknown manifest format {data.get('format')!r}")
        return _manifest_source(data, inp)
    return _list_source(raw, orig)
