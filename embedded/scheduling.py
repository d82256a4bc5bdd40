"""Task ids and scheduling: turn the SDK's new actions into numbered tasks, timers and children.

The ids must be exactly the SDK's (shared/durable-protocol.md, "Task ids"): positions in the
flattened, growing action list, plus the ids the SDK allocates by itself for retries (a retry
timer after each failure, the task again after each retry timer). Functions here change only the
instance's host model and the episode being built; nothing is written until the episode commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .protocol import (
    A_ACTIVITY,
    A_ACTIVITY_RETRY,
    A_ALL,
    A_ANY,
    A_CAN,
    A_ENTITY,
    A_HTTP,
    A_SIGNAL,
    A_SUB,
    A_SUB_RETRY,
    A_TIMER,
    A_WAIT,
    SUB_CREATED,
    TASK_SCHEDULED,
    TIMER_CREATED,
    action_at,
    fmt_ts,
    make_event,
    parse_ts,
)
from .records import Episode, InstanceState


def next_id(model: dict) -> int:
    n = model["next_id"]
    model["next_id"] = n + 1
    return n


def retry_state(action: dict) -> dict:
    """Host-side retry bookkeeping for a *WithRetry action: first interval, attempt cap, attempt no."""
    ro = action.get("retryOptions") or {}
    return {
        "ms": int(ro.get("firstRetryIntervalInMilliseconds") or 1000),
        "max": int(ro.get("maxNumberOfAttempts") or 1),
        "n": 1,
    }


def is_allocating(entry: dict, m: dict) -> bool:
    """Does delivering this message make the SDK allocate a task id by itself (retry machinery)?"""
    if entry.get("k") in ("act", "sub") and "retry" in entry:
        return not m.get("ok")
    if entry.get("k") == "rtimer":
        r = entry["of"]["retry"]
        return r["n"] < r["max"]
    return False


def walk(st: InstanceState, a: dict, path: list[int], ep: Episode, now: datetime) -> tuple | None:
    """Number one new action (recursively for WhenAll/WhenAny) and schedule its work.

    Returns None, ("can", input) for continue-as-new, or ("unsupported", why)."""
    model = st.model
    at = a.get("actionType")
    ts = fmt_ts(now)
    if at in (A_ALL, A_ANY):
        res = None
        for j, child in enumerate(a.get("compoundActions") or []):
            r = walk(st, child, [*path, j], ep, now)
            res = res or r
        return res
    if at in (A_ACTIVITY, A_ACTIVITY_RETRY):
        tid = next_id(model)
        entry: dict = {"k": "act", "name": a["functionName"], "input": a.get("input")}
        if at == A_ACTIVITY_RETRY:
            entry["retry"] = retry_state(a)
        model["open"][str(tid)] = entry
        schedule_activity(tid, entry, ep, ts)
        return None
    if at in (A_SUB, A_SUB_RETRY):
        tid = next_id(model)
        entry = {
            "k": "sub",
            "name": a["functionName"],
            "input": a.get("input"),
            "iid": a.get("instanceId"),
            "fixed": bool(a.get("instanceId")),
        }
        if at == A_SUB_RETRY:
            entry["retry"] = retry_state(a)
        model["open"][str(tid)] = entry
        schedule_sub(st, tid, entry, ep, ts)
        return None
    if at == A_TIMER:
        tid = next_id(model)
        fire_at = fmt_ts(parse_ts(a["fireAt"]))
        entry = {"k": "timer", "path": path, "fire_at": fire_at}
        if a.get("isCanceled"):
            entry["cancelled"] = True
        else:
            ep.timers.append((tid, fire_at))
        model["open"][str(tid)] = entry
        ep.events.append(make_event(TIMER_CREATED, ts, event_id=tid, FireAt=fire_at))
        return None
    if at == A_WAIT:
        name = a.get("externalEventName")
        model["waiting"][name] = model["waiting"].get(name, 0) + 1
        return None
    if at == A_CAN:
        next_id(model)
        return ("can", a.get("input"))
    if at == A_HTTP:
        tid = next_id(model)
        model["open"][str(tid)] = {"k": "http"}
        ep.messages.append(
            (
                st.row.instance_id,
                {
                    "t": "done",
                    "x": st.row.execution_id,
                    "id": tid,
                    "ok": False,
                    "reason": "call_http is not supported by the embedded host",
                    "details": "",
                },
            )
        )
        ep.events.append(make_event(TASK_SCHEDULED, ts, event_id=tid, Name="BuiltIn::HttpActivity"))
        return None
    if at in (A_ENTITY, A_SIGNAL):
        next_id(model)
        return ("unsupported", "durable entities are not supported by the embedded host")
    return ("unsupported", f"unknown action type {at}")


def schedule_activity(tid: int, entry: dict, ep: Episode, ts: str) -> None:
    ep.activities.append((tid, entry["name"], entry.get("input")))
    ep.events.append(
        make_event(TASK_SCHEDULED, ts, event_id=tid, Name=entry["name"], Input=entry.get("input"))
    )


def schedule_sub(st: InstanceState, tid: int, entry: dict, ep: Episode, ts: str) -> None:
    if not entry.get("fixed"):
        entry["iid"] = f"{st.row.instance_id}:{tid}"
    ep.children.append(
        {"iid": entry["iid"], "name": entry["name"], "input": entry.get("input"), "task_id": tid}
    )
    ep.events.append(
        make_event(
            SUB_CREATED,
            ts,
            event_id=tid,
            Name=entry["name"],
            InstanceId=entry["iid"],
            Input=entry.get("input"),
        )
    )


def check_cancelled(st: InstanceState, top: list, ep: Episode) -> None:
    """Timers the orchestrator cancelled since they were sent: drop them host-side."""
    for sid, entry in st.model["open"].items():
        if entry.get("k") != "timer" or entry.get("cancelled"):
            continue
        a = action_at(top, entry["path"])
        if a is not None and a.get("isCanceled"):
            entry["cancelled"] = True
            ep.cancel_timers.append(int(sid))


def allocate_retry(st: InstanceState, m: dict, entry: dict, ep: Episode, now: datetime) -> None:
    """The id the SDK took by itself for a retry: a retry timer after a failure, or the task again
    after a retry timer fired."""
    model = st.model
    ts = fmt_ts(now)
    if entry.get("k") == "rtimer":
        of = dict(entry["of"])
        of["retry"] = dict(of["retry"], n=of["retry"]["n"] + 1)
        nid = next_id(model)
        model["open"][str(nid)] = of
        if of["k"] == "act":
            schedule_activity(nid, of, ep, ts)
        else:
            schedule_sub(st, nid, of, ep, ts)
        return
    tid = next_id(model)
    fire_at = fmt_ts(now + timedelta(milliseconds=entry["retry"]["ms"]))
    model["open"][str(tid)] = {"k": "rtimer", "of": entry, "fire_at": fire_at}
    ep.timers.append((tid, fire_at))
    ep.events.append(make_event(TIMER_CREATED, ts, event_id=tid, FireAt=fire_at))
