"""The scoring loop: fetch+decode in a thread pool (bounded), batch same shapes, infer, write.

Why this shape: on a GPU node the model is fast and fetch/decode is the
bottleneck, so many images are fetched and decoded at once while the
previous batch runs; on a CPU the pool overlaps decode with inference, and
several inference streams (streams.py) keep every core busy. Batches complete in
input order whatever stream finishes first, so a run's output does not depend on
timing. Results are checkpointed every N images and on SIGTERM so a pre-empted
node resumes where it stopped and never writes an image twice. How one batch is
scored (sessions, providers, letterbox, boxes) is in detector.py.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import FORMAT_VERSION
from .detector import REQUIRE_CUDA_ENV, Detector, ModelError, cpu_count, cuda_required
from .images import ImageError, Letterboxed, decode_image
from .inputs import ImageItem, ImageSource, open_input
from .manifest import ModelManifest
from .progress import ProgressFile
from .storage import Location, StorageError
from .streams import StreamPool

__all__ = ["REQUIRE_CUDA_ENV", "Detector", "Interrupted", "ModelError", "RunConfig", "RunStats", "cpu_count",
           "cuda_required", "run"]

log = logging.getLogger("scoring")
CHECKPOINT_SUFFIX = ".checkpoint.json"
CHECKPOINT_FORMAT = "mdbatch-checkpoint/1"


class Interrupted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint was written."""


Group = list[tuple[ImageItem, Letterboxed]]  # images of one input shape, scored as one batch


@dataclass
class _Slot:
    """One thing the scoring loop completes in input order: a batch on a stream, or a failure."""

    future: Future[list[list[dict[str, Any]]]] | None = None
    group: Group | None = None
    batch: np.ndarray | None = None
    item: ImageItem | None = None
    failure: str | None = None
    retryable: bool = False

    def ready(self) -> bool:
        return self.future is None or self.future.done()


@dataclass
class RunConfig:
    model: Path
    input: str
    output: str
    threshold: float = 0.005
    batch_size: int | None = None
    checkpoint_every: int = 500
    workers: int | None = None
    threads: int | None = None
    providers: list[str] | None = None
    precision: str = "fp32"  # issue 13: fp32 (parity reference) | fp16
    provider: str | None = None  # issue 13: auto | cpu | cuda | tensorrt | openvino (None: as before)
    progress_every: float = 2.0  # seconds between progress-file writes; 0: no progress file
    classifier: Path | None = None  # issue 12: optional crop classifier (scoring/classifier.py)
    classifier_options: dict[str, Any] | None = None  # issue 12: open_stage keywords (country, ...)
    streams: int | None = None  # concurrent CPU inference sessions (scoring/streams.py); None: auto


@dataclass
class RunStats:
    total: int = 0
    resumed: int = 0
    scored: int = 0
    failed: int = 0
    seconds: float = 0.0
    batches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        done = self.scored + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0


def _entry(item: ImageItem, detections: list[dict[str, Any]] | None, failure: str | None
           ) -> dict[str, Any]:
    e: dict[str, Any] = {"file": item.file}
    if failure is not None:
        e["failure"] = failure
    else:
        e["detections"] = detections
    if item.meta is not None:
        e["meta"] = item.meta
    return e


def build_info(m: ModelManifest, execution_provider: str | None = None) -> dict[str, Any]:
    """The results `info`; `execution_provider` (ONNX Runtime's, e.g. CUDAExecutionProvider) says
    where the shard was actually scored (an extra field; readers of the format ignore unknown ones)."""
    info: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "detector": m.detector,
        "detection_completion_time": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "detector_metadata": {
            "megadetector_version": m.detector,
            "typical_detection_threshold": m.typical_detection_threshold,
            "conservative_detection_threshold": m.conservative_detection_threshold,
            "image_size": m.input_size,
        },
    }
    if execution_provider:
        info["execution_provider"] = execution_provider
    return info


class _Checkpoint:
    """Partial results beside the output; only valid for the same model, threshold and images."""

    def __init__(self, output: Location, key: dict[str, Any]) -> None:
        self.loc = output.sibling(CHECKPOINT_SUFFIX)
        self.key = key

    def load(self, wanted: set[str]) -> dict[str, dict[str, Any]]:
        try:
            raw = self.loc.read_bytes()
        except StorageError as e:
            log.warning("checkpoint not readable, starting over: %s", e)
            return {}
        if raw is None:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("checkpoint %s is corrupt, starting over", self.loc.describe())
            return {}
        if data.get("format") != CHECKPOINT_FORMAT or data.get("key") != self.key:
            log.warning("checkpoint %s is for another model/threshold, starting over", self.loc.describe())
            return {}
        retry = set(data.get("retry", []))
        return {e["file"]: e for e in data.get("images", [])
                if e.get("file") in wanted and e["file"] not in retry}

    def save(self, entries: dict[str, dict[str, Any]], retry: set[str]) -> None:
        body = {"format": CHECKPOINT_FORMAT, "key": self.key, "images": list(entries.values()),
                "retry": sorted(retry)}
        self.loc.write_bytes(json.dumps(body, separators=(",", ":")).encode())

    def remove(self) -> None:
        self.loc.delete()


def _prepare(det: Detector, source: ImageSource, item: ImageItem,
             keep: dict[str, np.ndarray] | None = None
             ) -> tuple[ImageItem, Letterboxed | None, str | None, bool]:
    """Fetch + decode + letterbox one image (runs in the pool; never raises).

    The last element says whether a failure was in fetching (worth retrying on resume).
    """
    try:
        data = source.fetch(item.file)
    except StorageError as e:
        return item, None, f"image access failure: {e}", True
    except OSError as e:
        return item, None, f"image access failure: {e.strerror or type(e).__name__}", True
    except Exception as e:
        return item, None, f"image access failure: {type(e).__name__}", True
    try:
        img = decode_image(data)
        lb = det.preprocess(img)
        if keep is not None:  # issue 12: the classification stage crops from the decoded image
            keep[item.file] = img
        return item, lb, None, False
    except ImageError as e:
        return item, None, str(e), False
    except Exception as e:  # never fail the shard for one image
        return item, None, f"image access failure: {type(e).__name__}: {e}", False


def run(cfg: RunConfig, detector: Detector | None = None) -> RunStats:
    """Score ``cfg.input`` into ``cfg.output``. Raises ModelError/InputError/StorageError/Interrupted."""
    t0 = time.monotonic()
    det = detector or Detector(cfg.model, cfg.threads, cfg.providers, cfg.precision, cfg.provider,
                               streams=cfg.streams)
    source = open_input(cfg.input)
    out = Location(cfg.output)
    out.check_writable()
    ncpu = cpu_count()
    batch_size = cfg.batch_size or (8 if det.on_gpu else 1)
    workers = cfg.workers or (min(16, 4 * ncpu) if det.on_gpu else max(2, ncpu))
    window = workers + 2 * batch_size * det.streams
    delay = float(os.environ.get("MDBATCH_SCORING_DELAY_MS", "0")) / 1000.0  # tests only

    # --- issue 12: optional classification stage (None: the run is exactly as without it) ---
    from .classifier import open_stage
    stage = open_stage(cfg.classifier, det.providers, cfg.threads, **(cfg.classifier_options or {}),
                       detection_categories=det.manifest.categories)
    decoded: dict[str, np.ndarray] | None = {} if stage is not None else None
    # --- end issue 12 ---

    items = source.items
    ckpt = _Checkpoint(out, {"model_sha256": det.sha256, "threshold": cfg.threshold,
                             **(stage.checkpoint_key() if stage is not None else {})})
    done = ckpt.load({it.file for it in items})
    stats = RunStats(total=len(items), resumed=len(done))
    todo = [it for it in items if it.file not in done]
    retry: set[str] = set()  # fetch failures: final here, fetched again if this run is resumed
    resumed_failed = sum(1 for e in done.values() if "failure" in e)
    progress = ProgressFile(out, len(items), cfg.progress_every)
    progress.update(len(done), resumed_failed)

    stop = threading.Event()
    old_handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old_handlers[sig] = signal.signal(sig, lambda *_: stop.set())

    since_ckpt = 0
    pending: dict[tuple[int, int], Group] = collections.defaultdict(list)

    # Everything that finishes an image, in input order: batches on the streams (scoring/streams.py)
    # and failures. Completing them strictly in this order, with the checkpoint test after each,
    # makes what a run writes (and when the classifier's batches close) independent of timing.
    inflight: collections.deque[_Slot] = collections.deque()

    def flush(shape: tuple[int, int]) -> None:
        group = pending.pop(shape, [])
        if not group:
            return
        if len(group) == 1:
            batch = group[0][1].tensor[None]
        else:  # issue 13: into a reused batch buffer, returned (with the images') once scored
            batch = np.stack([lb.tensor for _, lb in group],
                             out=det.buffers.take((len(group), *group[0][1].tensor.shape)))

        def score(session: Any) -> list[list[dict[str, Any]]]:
            preds = det.infer_checked(batch, session)
            return [det.detections(pred, shape, lb.orig_hw, cfg.threshold)
                    for (_, lb), pred in zip(group, preds, strict=True)]

        inflight.append(_Slot(streams.submit(score), group, batch))
        settle(det.streams)

    def settle(limit: int) -> None:
        """Complete finished slots at the head, and the oldest until at most ``limit`` batches are
        in flight (one waiting per stream keeps every stream busy)."""
        nonlocal since_ckpt
        while inflight and (inflight[0].ready() or sum(1 for x in inflight if x.future is not None) > limit):
            slot = inflight.popleft()
            if slot.failure is not None:
                done[slot.item.file] = _entry(slot.item, None, slot.failure)
                if slot.retryable:
                    retry.add(slot.item.file)
                stats.failed += 1
                since_ckpt += 1
                maybe_checkpoint()
                continue
            assert slot.future is not None and slot.group is not None
            found = slot.future.result()  # a ModelError from the stream surfaces here
            stats.batches += 1
            if len(slot.group) > 1 and slot.batch is not None:
                det.buffers.give(slot.batch)
            for (item, lb), dets in zip(slot.group, found, strict=True):
                done[item.file] = _entry(item, dets, None)
                if stage is not None and decoded is not None:  # issue 12
                    stage.add(decoded.pop(item.file), dets)
                det.buffers.give(lb.tensor)  # issue 13: the letterbox buffer goes back to the pool
                stats.scored += 1
            since_ckpt += len(slot.group)
            if delay:
                time.sleep(delay * len(slot.group))
            maybe_checkpoint()

    def maybe_checkpoint() -> None:
        nonlocal since_ckpt
        if cfg.checkpoint_every > 0 and since_ckpt >= cfg.checkpoint_every:
            if stage is not None:  # issue 12: no unclassified crop in a checkpoint
                stage.flush()
            ckpt.save(done, retry)
            since_ckpt = 0

    try:
        with StreamPool(det.sessions) as streams, \
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
            queue: collections.deque[Future[Any]] = collections.deque()
            it = iter(todo)
            for nxt in it:
                queue.append(pool.submit(_prepare, det, source, nxt, decoded))
                if len(queue) >= window:
                    break
            while queue and not stop.is_set():
                item, lb, failure, retryable = queue.popleft().result()
                for nxt in it:  # keep the window full
                    queue.append(pool.submit(_prepare, det, source, nxt, decoded))
                    break
                if failure is not None or lb is None:
                    inflight.append(_Slot(item=item, failure=failure or "image access failure",
                                          retryable=retryable))
                    settle(det.streams)
                else:
                    pending[lb.shape].append((item, lb))
                    if len(pending[lb.shape]) >= batch_size:
                        flush(lb.shape)
                    elif sum(len(v) for v in pending.values()) >= 2 * batch_size:
                        flush(max(pending, key=lambda k: len(pending[k])))
                progress.update(len(done), resumed_failed + stats.failed)
            if stop.is_set():
                for f in queue:
                    f.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
            else:
                for shape in list(pending):
                    flush(shape)
            settle(0)  # what the streams scored lands in the results (or the checkpoint)
        if stage is not None:  # issue 12
            stage.flush()
        if stop.is_set():
            ckpt.save(done, retry)
            progress.update(len(done), resumed_failed + stats.failed, force=True)
            raise Interrupted(f"interrupted: checkpoint with {len(done)} of {len(items)} images "
                              f"written to {ckpt.loc.describe()}")
        results = {
            "info": build_info(det.manifest, det.providers[0] if det.providers else None),
            "detection_categories": dict(det.manifest.categories),
            "images": [done[it.file] for it in sorted(items, key=lambda i: i.file)],
        }
        if stage is not None:  # issue 12: file-level classification fields
            results = stage.decorate(results)
        out.write_bytes(json.dumps(results, indent=1).encode())
        ckpt.remove()
        progress.finish(resumed_failed + stats.failed)  # after the result: done == total means written
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    stats.seconds = time.monotonic() - t0
    stats.extra = {"batch_size": batch_size, "workers": workers, "providers": det.providers,
                   "streams": det.streams, "threads_per_stream": det.plan.threads}
    if stage is not None:  # issue 12
        stats.extra.update(classified_crops=stage.crops, classifier_batches=stage.batches)
    return stats
