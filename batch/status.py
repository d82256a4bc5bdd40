"""The status model: the orchestrator's custom status, the curated status, and the v4 mapping.

Custom status is what the durable status URL shows live; it holds counts only (well under 16 KB).
"""

from __future__ import annotations

from datetime import UTC, datetime
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


# The parent orchestration reads its running shards' progress files on a durable timer. Each tick
# costs about 8 history events (TimerCreated/Fired, TaskScheduled/Completed and two episodes'
# Orchestrator Started/Completed), and every episode replays the whole history, so the number of
# ticks must stay small however long the job runs. The wait is the base interval until scoring has
# run PROGRESS_GROWTH x base, then 1/PROGRESS_GROWTH of the time scoring has run so far: elapsed time
# grows by a factor (1 + 1/8) per tick, so a job of T seconds ticks about 8 + 8 * ln(T / (8 * base))
# times. With the Azure default (30 s): 20 min -> 21 ticks; a 4M-image job of ~4 h (2,000 shards on
# 16 GPUs) -> 42 ticks, ~340 events; even 24 h -> 57 ticks. Progress stays fresh where it matters
# (the first minutes); late in a long job a tick every 1/8 of the elapsed time is plenty, and each
# finished shard group (at most ~40 of them) still updates the status at once. Embedded (CLI, base
# 1 s): a one-minute run ticks every 1 s for 8 s, then every 1-7.5 s (25 ticks).
PROGRESS_GROWTH = 8.0


def progress_delay(base_s: float, elapsed_s: float) -> float:
    """Seconds until the next progress tick, `elapsed_s` seconds after scoring began (0: no ticks)."""
    if base_s <= 0:
        return 0.0
    return max(base_s, max(0.0, elapsed_s) / PROGRESS_GROWTH)


POLL_GROWTH = 16.0  # past the cap, a job poll waits 1/16 of the time already waited


def next_poll_delay(delay_s: float, factor: float, cap_s: float, waited_s: float) -> float:
    """Seconds until the next job poll: back off by `factor` to `cap_s`, then a sixteenth of the
    time already waited. A job stuck in a queue for 12 h is polled about 70 times, not 360, so the
    shard's history stays small, while a normal shard (minutes) is still seen within `cap_s`."""
    return max(min(delay_s * factor, cap_s), max(0.0, waited_s) / POLL_GROWTH)


def state_of(runtime_status: str | None) -> State:
    return _RUNTIME_TO_STATE.get(runtime_status or "", State.RUNNING)


def _result(output: dict[str, Any], links: dict[str, str] | None) -> dict[str, Any]:
    """The completed output as callers see it: `output_file_urls` holds the links signed for this
    read (`links`); the store names (`output_files`) stay inside. Older jobs kept frozen links."""
    out = {k: v for k, v in output.items() if k != "output_files"}
    if links is not None:
        out["output_file_urls"] = links
    else:
        out.setdefault("output_file_urls", {})
    return out


def curated_status(durable: dict[str, Any], links: dict[str, str] | None = None) -> dict[str, Any]:
    """The caller-facing status from a durable status document (as the client SDK returns it);
    `links`: the result links signed for this read (triggers/links.py)."""
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
    if state in (State.QUEUED, State.RUNNING):
        stall = stalled(durable)
        if stall:
            out["stalled"] = True
            out["message"] = stall
    output = durable.get("output")
    if state == State.COMPLETED and isinstance(output, dict):
        out["result"] = _result(output, links)
    elif state == State.FAILED:
        out["error"] = output if isinstance(output, str) else "the job failed"
    elif state == State.CANCELED:
        out["message"] = "canceled"
    return out


def v4_status(durable: dict[str, Any], links: dict[str, str] | None = None) -> dict[str, Any]:
    """The old v4 `Status` object: request_status running|completed|failed|problem|canceled + message."""
    runtime = durable.get("runtimeStatus")
    state = state_of(runtime)
    custom = durable.get("customStatus") or {}
    output = durable.get("output")
    if state == State.COMPLETED and isinstance(output, dict):
        return {"request_status": "completed", "message": {
            "num_failed_shards": output.get("failed_shards", 0),
            "output_file_urls": _result(output, links)["output_file_urls"],
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
    scored, images = custom.get("images_scored", 0), custom.get("images_total", 0)
    return {"request_status": "running",
            "message": f"{stage}: {done} of {total} shards done, "
                       f"{scored} of {images} images scored"}


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def stalled(durable: dict[str, Any], now: datetime | None = None) -> str | None:
    """Why a running job has not moved for longer than its `stall_seconds` option, else None.

    "Moved" is the orchestration's last update: every episode (a shard group done, a progress tick,
    a step finished) sets it. A quiet spell is a stall once it is longer than `stall_seconds` plus
    the gap between progress ticks that is expected by then (they thin out on long jobs, see
    `progress_delay`). The reason is the host's fault when it reports one (the embedded host's
    `customStatus.hostFault`, e.g. its state database's disk is full), else the stage it is in.
    """
    inp = durable.get("input") if isinstance(durable.get("input"), dict) else {}
    opts = inp.get("options") if isinstance(inp.get("options"), dict) else {}
    limit = float(opts.get("stall_seconds") or 0)
    created, updated = _when(durable.get("createdTime")), _when(durable.get("lastUpdatedTime"))
    if limit <= 0 or created is None or updated is None:
        return None
    quiet = ((now or datetime.now(UTC)) - updated).total_seconds()
    ran = (updated - created).total_seconds()
    expected = progress_delay(float(opts.get("progress_interval_s") or 0), ran)
    if quiet <= limit + expected:
        return None
    custom = durable.get("customStatus") if isinstance(durable.get("customStatus"), dict) else {}
    fault = custom.get("hostFault") if isinstance(custom.get("hostFault"), dict) else None
    why = fault.get("reason") if fault else f"no update at stage {custom.get('stage') or 'queued'}"
    since = f" (since {fault['since']})" if fault and fault.get("since") else ""
    return f"no progress for {int(quiet)} s: {why}{since}"
