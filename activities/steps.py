"""The side effects of a request, as plain functions of (services, small dict) -> small dict.

Each is idempotent: the durable runtime may run an activity more than once. Submitting uses the
deterministic job name plus a receipt; planning, aggregating and publishing overwrite the same
names with the same content; cleanup and cancel tolerate what is already gone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from activities import services as sv
from adapters.compute.base import JobState, ShardJob
from adapters.errors import AdapterError, LocationError, NotFoundError, SecretNotFoundError
from adapters.secrets import check_ref, unpark
from adapters.storage import check_caller_location, open_store, parse_location
from batch import outputs as batch_outputs
from batch.fanout import shard_images
from batch.merge import merge_shards
from batch.planning import IMAGE_EXTENSIONS, TooManyImages, parse_image_list, plan_shards, select_images
from batch.signing import SignatureError, verify_spec

log = logging.getLogger("mdbatch.activities")


class RequestProblem(Exception):
    """The request cannot be served as asked (list unreadable, too many images, ...): no retry helps."""


# --- plan -------------------------------------------------------------------------------------

def _secret_ref_ok(ref: str | None, rid: str, kind: str) -> None:
    if not ref:
        return
    try:
        check_ref(rid, ref, kind)
    except AdapterError:
        raise RequestProblem(f"refused: the {kind} secret reference belongs to another request") from None


def _secret(svc: sv.Services, ref: str | None, rid: str, kind: str) -> str | None:
    """The parked SAS behind `ref`, only when it was parked for this request (`mdb-{rid}-{kind}`)."""
    if not ref:
        return None
    _secret_ref_ok(ref, rid, kind)
    try:
        return svc.secrets.get(ref)
    except SecretNotFoundError:
        raise RequestProblem("the request's access token is no longer available (canceled?)") from None


def _read_list(svc: sv.Services, ref: dict[str, Any], rid: str) -> Any:
    """Read the image-list JSON named by {url, secret_ref} (a single blob or file)."""
    url: str = ref["url"]
    parent, _, name = url.rstrip("/").rpartition("/")
    _confined(url, svc.settings, "images_requested_json_sas")
    store = open_store(parent, svc.settings, sas=_secret(svc, ref.get("secret_ref"), rid, "list"),
                       secrets=svc.secrets)
    try:
        data = store.read_bytes(unquote(name))
    except NotFoundError:
        raise RequestProblem("the image list (images_requested_json_sas) does not exist") from None
    if len(data) > svc.settings.max_list_bytes:
        raise RequestProblem(f"the image list is larger than {svc.settings.max_list_bytes} bytes")
    try:
        return json.loads(data)
    except ValueError:
        raise RequestProblem("the image list is not valid JSON") from None


def _confined(url: str, s: Any, what: str) -> None:
    """A local source is read only under the configured roots, never in the state folder."""
    try:
        check_caller_location(url, s)
    except LocationError as exc:
        raise RequestProblem(f"{what}: {exc}") from None


def verify_job(svc: sv.Services, job: Any) -> None:
    """Act only on job specs our doors made: a valid signature of this service's key."""
    try:
        verify_spec(svc.service_key(), job)
    except SignatureError as exc:
        raise RequestProblem(f"refused: {exc}") from None


def plan(svc: sv.Services, job: dict[str, Any]) -> dict[str, Any]:
    """List and filter the images, write one manifest per shard, return counts (idempotent)."""
    verify_job(svc, job)  # before anything is read, written or resolved
    rid = job["request_id"]
    s = svc.settings
    try:
        return json.loads(svc.work.read_bytes(sv.plan_name(rid)))
    except NotFoundError:
        pass
    source = job.get("source")
    if source:  # checked here also when a list names the images (the scorer reads the source)
        _confined(source["url"], s, "input_container_sas")
        _secret_ref_ok(source.get("secret_ref"), rid, "input")
    ordered = False
    if job.get("image_list"):
        raw = _read_list(svc, job["image_list"], rid)
        try:
            entries = list(parse_image_list(raw))
        except ValueError as exc:
            raise RequestProblem(str(exc)) from None
        del raw
        ordered = True
        if job.get("use_url"):
            for i, (u, _m) in enumerate(entries):
                try:
                    loc = parse_location(u.split("?", 1)[0], s)
                except Exception as exc:
                    raise RequestProblem(f"image list entry {i}: {exc}") from None
                if loc.kind != "blob":
                    raise RequestProblem(f"image list entry {i}: only storage URLs can be used")
        exts: tuple[str, ...] = IMAGE_EXTENSIONS
    else:
        assert source is not None
        store = open_store(source["url"], s, sas=_secret(svc, source.get("secret_ref"), rid, "input"),
                           secrets=svc.secrets)
        entries = ((n, None) for n in store.list(prefix=job.get("image_path_prefix") or "",
                                                   extensions=IMAGE_EXTENSIONS))
        exts = IMAGE_EXTENSIONS
    try:
        sel = select_images(entries, request_id=rid, prefix=job.get("image_path_prefix"),
                            first_n=job.get("first_n"), sample_n=job.get("sample_n"), extensions=exts,
                            ordered=ordered, sorted_listing=not ordered, limit=s.max_images)
    except TooManyImages as exc:  # raised while listing: a huge container is never held in memory
        raise RequestProblem(f"{exc}; narrow it with image_path_prefix, first_n or sample_n") from None
    manifest_source = None if job.get("use_url") else source
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="mdb-plan") as pool:
        futures: list[Future[None]] = []

        def write(shard: int, manifest: dict[str, Any]) -> None:
            futures.append(pool.submit(svc.work.write_json, sv.manifest_name(rid, shard), manifest))
            if len(futures) >= 64:
                for f in futures:
                    f.result()
                futures.clear()

        result = plan_shards(sel, request_id=rid, shard_size=int(job["options"]["shard_size"]),
                             source=manifest_source, write_manifest=write)
        for f in futures:
            f.result()
    out = result.to_dict()
    svc.work.write_json(sv.plan_name(rid), out)
    log.info("request %s: %d images in %d shards", rid, result.images, result.shards)
    return out


# --- compute jobs ---------------------------------------------------------------------------

def canceled(svc: sv.Services, rid: str) -> bool:
    return bool(svc.work.exists(sv.cancel_marker_name(rid)))


def submit(svc: sv.Services, arg: dict[str, Any]) -> dict[str, Any]:
    """Submit one shard attempt (idempotent: deterministic job name + a receipt in the work store)."""
    rid, shard, attempt = arg["request_id"], int(arg["shard"]), int(arg["attempt"])
    if canceled(svc, rid):
        return {"canceled": True}
    receipt = sv.job_receipt_name(rid, shard, attempt)
    try:
        return {"job_id": json.loads(svc.work.read_bytes(receipt))["job_id"]}
    except NotFoundError:
        pass
    from batch.classification import classify_args  # issue 12

    job = ShardJob(
        request_id=rid, shard=shard, attempt=attempt,
        manifest_url=svc.work.child_url(sv.manifest_name(rid, shard)),
        output_url=svc.work.child_url(sv.result_name(rid, shard)),
        model=arg["model"], threshold=float(arg["threshold"]),
        checkpoint_every=int(arg.get("checkpoint_every", 500)),
        **classify_args(arg),  # issue 12
    )
    job_id = svc.compute.submit(job)
    svc.work.write_json(receipt, {"job_id": job_id, "name": job.name, "shard": shard, "attempt": attempt})
    if canceled(svc, rid):  # a cancel raced with us: it may have listed receipts before ours
        svc.compute.cancel(job_id)
        return {"canceled": True}
    return {"job_id": job_id}


def poll(svc: sv.Services, arg: dict[str, Any]) -> dict[str, Any]:
    """The job's state; a success without a result file counts as a failure.

    When the attempt ended without a result, `checkpointed` is how many images the shard's
    checkpoint holds (what a resubmission resumes from): the orchestrator compares it with the
    count after earlier attempts and does not charge an attempt that advanced it.
    """
    st = svc.compute.status(arg["job_id"])
    state = JobState(st.state)
    rid, shard = arg["request_id"], int(arg["shard"])
    result = sv.result_name(rid, shard)
    if state is JobState.SUCCEEDED and not svc.work.exists(result):
        return {"state": "FAILED", "reason": "the job succeeded but wrote no result", "active": False,
                "checkpointed": checkpointed(svc, rid, shard)}
    out: dict[str, Any] = {"state": state.name, "reason": st.reason, "active": not st.done}
    if state in (JobState.FAILED, JobState.PREEMPTED):
        out["checkpointed"] = checkpointed(svc, rid, shard)
    return out


CHECKPOINT_SUFFIX = ".checkpoint.json"  # the scorer's (scoring.engine.CHECKPOINT_SUFFIX)


def checkpointed(svc: sv.Services, rid: str, shard: int) -> int:
    """Images in the shard's checkpoint that a resumed run keeps (fetch failures are retried, so
    they do not count); 0 when there is none or it cannot be read."""
    try:
        body = json.loads(svc.work.read_bytes(sv.result_name(rid, shard) + CHECKPOINT_SUFFIX))
        retry = set(body.get("retry") or [])
        return sum(1 for e in body.get("images") or [] if e.get("file") not in retry)
    except (AdapterError, OSError, ValueError, TypeError, AttributeError):
        return 0


def cancel_job(svc: sv.Services, arg: dict[str, Any]) -> dict[str, Any]:
    svc.compute.cancel(arg["job_id"])
    return {}


def cancel_request(svc: sv.Services, rid: str) -> int:
    """Stop everything of a request: mark it, cancel every submitted job, drop parked secrets.

    The marker is written first, so a submit running concurrently either leaves a receipt we see
    here or sees the marker itself and cancels its own job. Returns the number of jobs cancelled.
    """
    svc.work.write_json(sv.cancel_marker_name(rid), {"canceled": True})
    n = 0
    for name in list(svc.work.list(prefix=f"{rid}/jobs/")):
        try:
            job_id = json.loads(svc.work.read_bytes(name))["job_id"]
        except (NotFoundError, ValueError, KeyError):
            continue
        svc.compute.cancel(job_id)
        n += 1
    unpark(svc.secrets, rid)
    return n


# --- live progress --------------------------------------------------------------------------

MAX_PROGRESS_SHARDS = 5000  # a tick reads at most this many shards (a few running groups' worth)


def progress(svc: sv.Services, arg: dict[str, Any]) -> dict[str, Any]:
    """Images done in the shard ranges of the groups still running, one count per range.

    Read-only, so running it twice is harmless. Per shard: a result file -> the shard's image count;
    else the scorer's progress file (`done`, clipped to the shard's size); else 0 (not started, or
    a scorer without progress files). A shard that cannot be read this time counts 0: the
    orchestrator never lets the shown count go backwards, and the next tick reads it again.
    Input {request_id, ranges: [[first, stop], ...]}; output {"scored": [n, ...]}.
    """
    rid = arg["request_id"]
    ranges = [(int(lo), int(hi)) for lo, hi in (arg.get("ranges") or [])]
    try:
        plan_doc = json.loads(svc.work.read_bytes(sv.plan_name(rid)))
        images, size = int(plan_doc["images"]), int(plan_doc["shard_size"])
    except (NotFoundError, ValueError, KeyError, TypeError):
        return {"scored": [0] * len(ranges)}
    shards = [s for lo, hi in ranges for s in range(max(0, lo), hi)][:MAX_PROGRESS_SHARDS]

    def one(s: int) -> int:
        total = shard_images(images, size, s)
        try:
            if svc.work.exists(sv.result_name(rid, s)):
                return total
            body = json.loads(svc.work.read_bytes(sv.progress_name(rid, s)))
            return max(0, min(total, int(body.get("done", 0))))
        except (AdapterError, OSError, ValueError, TypeError, AttributeError):
            return 0

    if not shards:
        counts: dict[int, int] = {}
    else:
        workers = max(1, min(svc.settings.read_workers, len(shards)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mdb-progress") as pool:
            counts = dict(zip(shards, pool.map(one, shards), strict=True))
    return {"scored": [sum(counts.get(s, 0) for s in range(lo, hi)) for lo, hi in ranges]}


# --- aggregate and publish ------------------------------------------------------------------

class _Prefetch:
    """Reads shard results in order with one read ahead (two shards in memory at most)."""

    def __init__(self, read: Callable[[int], bytes | None], shards: int, ahead: int = 1) -> None:
        self.read, self.shards, self.ahead = read, shards, ahead
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mdb-agg")
        self.futures: dict[int, Future[bytes | None]] = {}

    def __call__(self, s: int) -> bytes | None:
        fut = self.futures.pop(s, None)
        for k in range(s + 1, min(s + 1 + self.ahead, self.shards)):
            if k not in self.futures:
                self.futures[k] = self.pool.submit(self.read, k)
        return fut.result() if fut is not None else self.read(s)

    def close(self) -> None:
        for f in self.futures.values():
            f.cancel()
        self.pool.shutdown(wait=True)


def put_file(store: Any, name: str, path: Path) -> None:
    """Upload a local file without reading it whole (local folders: move; blobs: streamed upload)."""
    writer = getattr(store, "write_file", None)
    if writer is not None:
        writer(name, path)
        return
    url = store.child_url(name)
    if url.startswith("file://"):
        target = Path(unquote(urlsplit(url).path))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
        return
    with open(path, "rb") as fh:
        store.write_bytes(name, fh)  # azure-storage-blob streams a file object in chunks


def output_names(arg: dict[str, Any]) -> dict[str, str]:
    """The three files' names in the output store: v4's names when the orchestration passes the
    request's name and submission time; the older `{id}/{kind}.json` for jobs started before."""
    rid = arg["request_id"]
    if "submitted" in arg:
        return batch_outputs.output_names(rid, arg.get("request_name"), arg.get("submitted"))
    return {kind: sv.output_name(rid, kind) for kind in sv.OUTPUT_FILES}


def aggregate(svc: sv.Services, arg: dict[str, Any], tmp_dir: str | None = None) -> dict[str, Any]:
    """Merge every shard result into the three output files (streamed; one shard in memory)."""
    rid, shards = arg["request_id"], int(arg["shards"])
    failed = {int(s): reason for reason, ss in (arg.get("failed") or {}).items() for s in ss}
    names = output_names(arg)
    extra_info = {k: v for k, v in (arg.get("metadata") or {}).items() if v is not None} or None

    def read_result(s: int) -> bytes | None:
        try:
            return svc.work.read_bytes(sv.result_name(rid, s))
        except NotFoundError:
            return None

    prefetch = _Prefetch(read_result, shards)
    try:
        with tempfile.TemporaryDirectory(prefix="mdb-agg-", dir=tmp_dir) as tmp:
            paths = {k: Path(tmp) / f"{k}.json" for k in sv.OUTPUT_FILES}
            with open(paths["detections"], "w", encoding="utf-8") as d, \
                    open(paths["failed_images"], "w", encoding="utf-8") as f, \
                    open(paths["images"], "w", encoding="utf-8") as i:
                counts = merge_shards(
                    shards, read_manifest=lambda s: svc.work.read_bytes(sv.manifest_name(rid, s)),
                    read_result=prefetch, failed_shards=failed,
                    detections_out=d, failed_out=f, images_out=i, extra_info=extra_info)
            for kind, path in paths.items():
                put_file(svc.output, names[kind], path)
    finally:
        prefetch.close()
    return {"images": counts.images, "failed_images": counts.failed_images,
            "failed_shards": counts.failed_shards, "detections": counts.detections}


def publish(svc: sv.Services, arg: dict[str, Any]) -> dict[str, str]:
    """The three files' names in the output store, once each is there.

    No link is made here: a link frozen into the orchestration output would die with its expiry
    (7 days at most for a user-delegation SAS). Status reads sign fresh ones (triggers/links.py).
    """
    names = output_names(arg)
    for kind, name in names.items():
        if not svc.output.exists(name):
            raise AdapterError(f"the {kind} file of request {arg['request_id']} is missing from the output")
    return names


def cleanup(svc: sv.Services, arg: dict[str, Any]) -> dict[str, Any]:
    """Remove the request's parked secrets (idempotent)."""
    unpark(svc.secrets, arg["request_id"])
    return {}
