"""Streaming merge of shard results into the three published files.

Shards are contiguous slices of one sorted image list, so the merged `images` array is the shard
results concatenated in shard order. One shard is in memory at a time and the outputs are written
as we go: memory is bounded by the shard size, whatever the size of the request.

Each manifest image appears exactly once in the output: scored (as the shard result has it), or
with a `failure` (bad image, missing from the result, or "shard failed: <reason>").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

FORMAT_VERSION = "1.6"
DEFAULT_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
CLASSIFICATION_KEYS = ("classification_categories", "classification_category_descriptions")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True)
class MergeCounts:
    images: int
    failed_images: int
    failed_shards: int
    detections: int


def _load(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        return None
    return doc


def _failed_entry(name: str, reason: str, meta: Mapping[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"file": name, "failure": reason, "detections": None}
    if meta and name in meta:
        entry["meta"] = meta[name]
    return entry


class _ArrayWriter:
    """Writes a JSON array one element per line without holding it."""

    def __init__(self, out: TextIO, head: str = "[", tail: str = "]") -> None:
        self.out, self.first, self.tail = out, True, tail
        out.write(head)

    def add(self, text: str) -> None:
        self.out.write("\n" if self.first else ",\n")
        self.out.write(text)
        self.first = False

    def close(self) -> None:
        self.out.write("\n" + self.tail if not self.first else self.tail)


def merge_shards(
    shards: int,
    *,
    read_manifest: Callable[[int], bytes],
    read_result: Callable[[int], bytes | None],
    failed_shards: Mapping[int, str],
    detections_out: TextIO,
    failed_out: TextIO,
    images_out: TextIO,
    extra_info: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> MergeCounts:
    """Merge shard results 0..shards-1; `failed_shards` maps a shard to why it failed.

    `read_result` returns None when a result does not exist; an unreadable result counts as a failed
    shard. The header (`info`, `detection_categories`) comes from the first readable result.
    """
    results: dict[int, dict[str, Any] | None] = {}
    header: dict[str, Any] | None = None
    # Find the header: usually shard 0; the parsed shard is kept and used once below.
    for s in range(shards):
        if s in failed_shards:
            continue
        doc = _load(read_result(s))
        results[s] = doc
        if doc is not None:
            header = doc
            break
    info: dict[str, Any] = dict((header or {}).get("info") or {})
    info["format_version"] = FORMAT_VERSION
    info["detection_completion_time"] = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S")
    if extra_info:
        info.update(extra_info)
    categories = (header or {}).get("detection_categories") or DEFAULT_CATEGORIES
    # issue 12: a classifier's file-level fields, carried as the shards wrote them (absent without one)
    if "classifier" in info:
        info["classification_completion_time"] = info["detection_completion_time"]
    head = "{\n" + '"info":' + _dumps(info) + ',\n"detection_categories":' + _dumps(categories)
    for key in CLASSIFICATION_KEYS:
        if header is not None and isinstance(header.get(key), dict):
            head += f',\n"{key}":' + _dumps(header[key])
    head += ',\n"images":['
    det = _ArrayWriter(detections_out, head=head, tail="]\n}\n")
    fail = _ArrayWriter(failed_out)
    allw = _ArrayWriter(images_out)
    n_images = n_failed = n_failed_shards = n_det = 0

    for s in range(shards):
        manifest = json.loads(read_manifest(s))
        names: list[str] = manifest["images"]
        meta: dict[str, Any] | None = manifest.get("meta")
        reason = failed_shards.get(s)
        doc: dict[str, Any] | None = None
        if reason is None:
            doc = results.pop(s) if s in results else _load(read_result(s))
            if doc is None:
                reason = "result missing or unreadable"
        entries: list[dict[str, Any]] = []
        if reason is not None:
            n_failed_shards += 1
            entries = [_failed_entry(n, f"shard failed: {reason}", meta) for n in names]
        else:
            assert doc is not None
            by_file = iter(sorted((e for e in doc["images"] if isinstance(e, dict) and "file" in e),
                                  key=lambda e: e["file"]))
            cur = next(by_file, None)
            for name in names:
                while cur is not None and cur["file"] < name:
                    cur = next(by_file, None)  # not in the manifest (or a duplicate): dropped
                if cur is not None and cur["file"] == name:
                    entry = cur
                    if meta and name in meta and "meta" not in entry:
                        entry["meta"] = meta[name]
                    if entry.get("failure") is not None:
                        entry["detections"] = None
                    cur = next(by_file, None)
                else:
                    entry = _failed_entry(name, "missing from shard result", meta)
                entries.append(entry)
            del doc
        for e in entries:
            det.add(_dumps(e))
            allw.add(_dumps(e["file"]))
            if e.get("failure") is not None:
                n_failed += 1
                fail.add(_dumps(e["file"]))
            else:
                n_det += len(e.get("detections") or ())
        n_images += len(entries)
    det.close()
    fail.close()
    allw.close()
    return MergeCounts(images=n_images, failed_images=n_failed, failed_shards=n_failed_shards,
                       detections=n_det)
