"""The status model: the orchestrator's custom status, the curated status, and the v4 mapping.

Custom status is what the durable status URL shows live; it holds counts only (well under 16 KB).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    LISTING = "listing"
    SCORING = "scoring"
    AGGREGATING = "aggregating"
    PUBLISHING = "publishing"
    COMPLETED = "completed"
    FAILED = "failed"


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


_RUNTIME_TO_STATE = {
    "Pending": State.QUEUED,
    "Running": State.RUNNING,
    "ContinuedAsNew": State.RUNNING,
    "Suspended": State.RUNNING,
    "Completed": State.COMPLETED,
    "Failed": State.FAILED,
    "Terminated": State.CANCELED,
    "Canceled": State.CANCELED,
}

STATES: tuple[str, ...] = tuple(s.value for s in State)


def custom_status(
    stage: Stage,
    *,
    images_total: int = 0,
    shards_total: int = 0,
    shards_done: int = 0,
    shards_failed: int = 0,
    images_scored: int = 0,
    message: str | None = None,
) -> dict[str, Any]:
    """Live progress for the durable status URL: counts only, a few hundred bytes."""
    out: dict[str, Any] = {
        "stage": stage.value, "images_total": images_total, "shards_total": shards_total,
        "shards_done": shards_done, "shards_failed": shards_failed, "images_scored": images_scored,
    }
    if message:
        out["message"] = message[:500]
    return out


def state_of(runtime_status: str | None) -> State:
    return _RUNTIME_TO_STATE.get(runtime_status or "", State.RUNNING)


def curated_status(durable: dict[str, Any]) -> dict[str, Any]:
    """The caller-facing status from a durable status document (as the client SDK returns it)."""
    runtime = durable.get("runtimeStatus")
    state = state_of(runtime)
    custom = durable.get("customStatus") or {}
    inp = durable.get("input") or {}
    out: dict[str, Any] = {
        "request_id": durable.get("instanceId"),
        "state": state.value,
        "stage": custom.get("stage"),
        "request_name": inp.get("request_name") if isinstance(inp, dict) else None,
        "model_version": inp.get("model") if isinstance(inp, dict) else None,
        "images_total": custom.get("images_total", 0),
        "shards_total": custom.get("shards_total", 0),
        "shards_done": custom.get("shards_done", 0),
        "shards_failed": custom.get("shards_failed", 0),
        "images_scored": custom.get("images_scored", 0),
        "created": durable.get("createdTime"),
        "updated": durable.get("lastUpdatedTime"),
    }
    if custom.get("message"):
        out["message"] = custom["message"]
    output = durable.get("output")
    if state == State.COMPLETED and isinstance(output, dict):
        out["result"] = output
    elif state == State.FAILED:
        out["error"] = output if isinstance(output, str) else "the job failed"
    elif state == State.CANCELED:
        out["message"] = "canceled"
    return out


def v4_status(durable: dict[str, Any]) -> dict[str, Any]:
    """The old v4 `Status` object: request_status running|completed|failed|problem|canceled + message."""
    runtime = durable.get("runtimeStatus")
    state = state_of(runtime)
    custom = durable.get("customStatus") or {}
    output = durable.get("output")
    if state == State.COMPLETED and isinstance(output, dict):
        return {"request_status": "completed", "message": {
            "num_failed_shards": output.get("failed_shards", 0),
            "output_file_urls": output.get("output_file_urls", {}),
        }}
    if state == State.COMPLETED:
        return {"request_status": "problem", "message": "completed without a result"}
    if state == State.FAILED:
        message = output if isinstance(output, str) else "the job failed"
        return {"request_status": "failed", "message": message}
    if state == State.CANCELED:
        return {"request_status": "canceled", "message": "Request has been canceled by the user."}
    if runtime == "Suspended":
        return {"request_status": "problem", "message": "the job is suspended"}
    stage = custom.get("stage") or "queued"
    done, total = custom.get("shards_done", 0), custom.get("shards_total", 0)
    return {"request_status": "running",
            "message": f"{stage}: {done} of {total} shards done, "
                       f"{custom.get('images_scored', 0)} images scored"}
