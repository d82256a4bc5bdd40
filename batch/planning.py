"""From "which images" to shard manifests.

The filter order is fixed (the old service's): list -> prefix -> extensions -> first_n -> sample_n.
The chosen images are sorted and de-duplicated, then cut into contiguous shards, so that shard
results concatenated in shard order are already the sorted results file (a streaming merge).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
MANIFEST_FORMAT = "mdbatch-shard/1"


@dataclass(frozen=True)
class Selection:
    """The images a request ends up with, sorted and unique, plus how they were chosen."""

    images: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    sample_seed: int | None = None
    considered: int = 0  # images seen after prefix and extension filters, before first_n/sample_n
    notes: tuple[str, ...] = ()


def sample_seed(request_id: str) -> int:
    """The seed used for sample_n: derived from the request id, so a rerun picks the same images."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big")


def parse_image_list(data: Any) -> Iterator[tuple[str, Any]]:
    """Entries of an image-list JSON: paths, or [path, metadata] pairs. Raises ValueError on bad shape."""
    if not isinstance(data, list):
        raise ValueError("the image list must be a JSON array")
    for i, entry in enumerate(data):
        if isinstance(entry, str):
            yield entry, None
        elif isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str):
            yield entry[0], entry[1]
        else:
            raise ValueError(f"image list entry {i} is neither a path nor a [path, metadata] pair")


def has_image_extension(name: str, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> bool:
    """Whether `name` ends with an image extension; for a full URL (use_url lists, often with a SAS
    per image) the path decides, not the end of the query string."""
    if "://" in name:
        name = name.split("#", 1)[0].split("?", 1)[0]
    low = name.lower()
    return any(low.endswith(e) for e in extensions)


def select_images(
    entries: Iterable[tuple[str, Any]],
    *,
    request_id: str,
    prefix: str | None = None,
    first_n: int | None = None,
    sample_n: int | None = None,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    ordered: bool = False,
) -> Selection:
    """Apply prefix -> extensions -> first_n -> sample_n to `entries` (a list or a listing).

    `ordered=True` says the entries are in the caller's meaningful order (an image list), so
    first_n takes the first N as given; a container listing (ordered=False) is sorted first so
    first_n is reproducible whatever order the store lists in.
    """
    exts = tuple(e.lower() for e in extensions)
    notes: list[str] = []
    seen: set[str] = set()
    meta: dict[str, Any] = {}
    kept: list[str] = []
    for name, m in entries:
        name = name.replace("\\", "/")
        if prefix and not name.startswith(prefix):
            continue
        if not has_image_extension(name, exts):
            continue
        if name in seen:
            continue
        seen.add(name)
        kept.append(name)
        if m is not None:
            meta[name] = m
    del seen
    considered = len(kept)
    if not ordered:
        kept.sort()
    if first_n is not None and len(kept) > first_n:
        kept = list(islice(kept, first_n))
    seed: int | None = None
    if sample_n is not None:
        seed = sample_seed(request_id)
        if sample_n < len(kept):
            kept = random.Random(seed).sample(kept, sample_n)
        else:
            notes.append(f"sample_n={sample_n} >= {len(kept)} images available: all were taken")
    kept.sort()
    if meta:
        chosen = set(kept)
        meta = {k: v for k, v in meta.items() if k in chosen}
    return Selection(images=kept, meta=meta, sample_seed=seed, considered=considered, notes=tuple(notes))


@dataclass(frozen=True)
class ShardPlan:
    """Small summary of a plan: what the orchestrator needs (counts and paths, never image lists)."""

    request_id: str
    images: int
    shards: int
    shard_size: int
    sample_seed: int | None = None
    notes: tuple[str, ...] = ()

    def shard_images(self, shard: int) -> int:
        """How many images shard `shard` holds (all full except possibly the last)."""
        if shard < 0 or shard >= self.shards:
            raise IndexError(shard)
        return min(self.shard_size, self.images - shard * self.shard_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "images": self.images, "shards": self.shards,
            "shard_size": self.shard_size, "sample_seed": self.sample_seed, "notes": list(self.notes),
        }


def shard_count(images: int, shard_size: int) -> int:
    return (images + shard_size - 1) // shard_size


def plan_shards(
    selection: Selection,
    *,
    request_id: str,
    shard_size: int,
    source: dict[str, Any] | None,
    write_manifest: Callable[[int, dict[str, Any]], None],
) -> ShardPlan:
    """Cut the sorted selection into shards and hand each manifest to `write_manifest(shard, obj)`."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    images = selection.images
    n = shard_count(len(images), shard_size)
    for shard in range(n):
        chunk = images[shard * shard_size:(shard + 1) * shard_size]
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT, "request_id": request_id, "shard": shard,
            "source": source, "images": chunk,
        }
        if selection.meta:
            m = {k: selection.meta[k] for k in chunk if k in selection.meta}
            if m:
                manifest["meta"] = m
        write_manifest(shard, manifest)
    return ShardPlan(request_id=request_id, images=len(images), shards=n, shard_size=shard_size,
                     sample_seed=selection.sample_seed, notes=selection.notes)
