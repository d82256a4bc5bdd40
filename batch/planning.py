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
from typing import Any

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
MANIFEST_FORMAT = "mdbatch-shard/1"


@dataclass(frozen=True)
class Selection:
    """The images a request ends up with, sorted and unique, plus how they were chosen."""

    images: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    sample_seed: int | None = None
    considered: int = 0  # images read after prefix and extension filters (a listing stops at first_n)
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


class TooManyImages(ValueError):
    """The request selects more images than the service takes; raised as soon as it is known."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request selects more than the limit of {limit} images")
        self.limit = limit


def _take(names: Iterable[str], first_n: int | None, sample_n: int | None, seed: int | None,
          limit: int | None) -> tuple[list[str], int]:
    """first_n, then sample_n, over names in their final order, holding at most what is kept.

    sample_n is a seeded reservoir sample (Algorithm R), so a sorted listing of millions of
    blobs is sampled in one pass with sample_n names in memory. Returns (kept, names seen).
    """
    kept: list[str] = []
    rng = random.Random(seed)
    seen = 0
    for name in names:
        if first_n is not None and seen >= first_n:
            break  # a sorted listing is not read past first_n
        seen += 1
        if sample_n is None:
            kept.append(name)
            if limit is not None and len(kept) > limit:
                raise TooManyImages(limit)
        elif len(kept) < sample_n:
            kept.append(name)
        else:
            j = rng.randrange(seen)
            if j < sample_n:
                kept[j] = name
    return kept, seen


def _unique_sorted(names: Iterable[str]) -> Iterator[str]:
    """Names of a listing that must already be sorted, duplicates dropped; raises if it is not."""
    prev: str | None = None
    for name in names:
        if prev is not None and name <= prev:
            if name == prev:
                continue
            raise ValueError(f"the storage listing is not sorted ({name!r} after {prev!r})")
        prev = name
        yield name


def select_images(
    entries: Iterable[tuple[str, Any]],
    *,
    request_id: str,
    prefix: str | None = None,
    first_n: int | None = None,
    sample_n: int | None = None,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    ordered: bool = False,
    sorted_listing: bool = False,
    limit: int | None = None,
) -> Selection:
    """Apply prefix -> extensions -> first_n -> sample_n to `entries` (a list or a listing).

    `ordered=True` says the entries are in the caller's meaningful order (an image list), so
    first_n takes the first N as given. Otherwise first_n takes the first N in name order:
    `sorted_listing=True` streams a store listing that is already sorted (Blob listings are), so
    memory holds only what is kept and a container of millions of blobs is read only as far as
    first_n; any other input is sorted first. More than `limit` images selected raises
    TooManyImages as soon as that is known.
    """
    exts = tuple(e.lower() for e in extensions)
    notes: list[str] = []
    meta: dict[str, Any] = {}
    seed = sample_seed(request_id) if sample_n is not None else None

    def wanted() -> Iterator[tuple[str, Any]]:
        for name, m in entries:
            name = name.replace("\\", "/")
            if prefix and not name.startswith(prefix):
                continue
            if has_image_extension(name, exts):
                yield name, m

    if ordered:
        seen: set[str] = set()
        in_order: list[str] = []
        for name, m in wanted():
            if name in seen:
                continue
            seen.add(name)
            in_order.append(name)
            if m is not None:
                meta[name] = m
        del seen
        kept, considered = _take(in_order, first_n, sample_n, seed, limit)
    elif sorted_listing:
        kept, considered = _take(_unique_sorted(n for n, _ in wanted()), first_n, sample_n, seed, limit)
    else:
        everything = sorted(n for n, _ in wanted())
        kept, considered = _take(_unique_sorted(everything), first_n, sample_n, seed, limit)
        del everything
    if sample_n is not None and len(kept) < sample_n:
        notes.append(f"sample_n={sample_n} >= {len(kept)} images available: all were taken")
    if limit is not None and len(kept) > limit:
        raise TooManyImages(limit)
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
