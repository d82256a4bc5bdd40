"""The worker-facing Durable protocol: event and action codes, timestamps, action-list shapes.

Everything here is fixed by the azure-functions-durable SDK and the Durable extension (see
shared/durable-protocol.md); nothing here touches storage or threads.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

TS_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"
OOP_MARKER = "$OutOfProcData$:"

# history event types
EXECUTION_STARTED, EXECUTION_COMPLETED, EXECUTION_FAILED, EXECUTION_TERMINATED = 0, 1, 2, 3
TASK_SCHEDULED, TASK_COMPLETED, TASK_FAILED = 4, 5, 6
SUB_CREATED, SUB_COMPLETED, SUB_FAILED = 7, 8, 9
TIMER_CREATED, TIMER_FIRED, ORCH_STARTED, ORCH_COMPLETED = 10, 11, 12, 13
EVENT_RAISED, CONTINUE_AS_NEW, EXEC_SUSPENDED, EXEC_RESUMED = 15, 16, 19, 20

# action types
A_ACTIVITY, A_ACTIVITY_RETRY, A_SUB, A_SUB_RETRY, A_CAN, A_TIMER, A_WAIT = 0, 1, 2, 3, 4, 5, 6
A_ENTITY, A_HTTP, A_SIGNAL, A_ANY, A_ALL = 7, 8, 9, 11, 12


def fmt_ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime(TS_FMT)


def parse_ts(s: str) -> datetime:
    s = s.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def status_time(s: str) -> str:
    """Status times the way the extension prints them: seconds precision, Z."""
    return parse_ts(s).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_event(etype: int, ts: str, event_id: int = -1, **kw: Any) -> dict:
    """One history event as the extension sends it (not yet played)."""
    e = {"EventType": etype, "EventId": event_id, "IsPlayed": False, "Timestamp": ts}
    e.update(kw)
    return e


def top_actions(actions: Any) -> list:
    """The flat, growing action list of this execution (schema v2 sends [[...]])."""
    if not actions:
        return []
    if len(actions) == 1 and isinstance(actions[0], list):
        return actions[0]
    flat: list = []
    for group in actions:
        flat.extend(group if isinstance(group, list) else [group])
    return flat


def has_continue_as_new(top: list) -> bool:
    return any(isinstance(a, dict) and a.get("actionType") == A_CAN for a in top)


def action_at(top: list, path: list[int]) -> dict | None:
    """The action at a path of indexes (compound actions nest under compoundActions)."""
    try:
        a = top[path[0]]
        for j in path[1:]:
            a = a["compoundActions"][j]
        return a
    except (IndexError, KeyError, TypeError):
        return None


def loads_or_text(s: str | None) -> Any:
    if s is None:
        return None
    try:
        return json.loads(s)
    except ValueError:
        return s


EVENT_NAMES = {
    0: "ExecutionStarted",
    1: "ExecutionCompleted",
    2: "ExecutionFailed",
    3: "ExecutionTerminated",
    4: "TaskScheduled",
    5: "TaskCompleted",
    6: "TaskFailed",
    7: "SubOrchestrationInstanceCreated",
    8: "SubOrchestrationInstanceCompleted",
    9: "SubOrchestrationInstanceFailed",
    10: "TimerCreated",
    11: "TimerFired",
    12: "OrchestratorStarted",
    13: "OrchestratorCompleted",
    15: "EventRaised",
    16: "ContinueAsNew",
    19: "ExecutionSuspended",
    20: "ExecutionResumed",
}


def public_history(parts: list[str], with_output: bool) -> list[dict]:
    """History in the management API's shape (orchestrator bookkeeping events left out)."""
    out = []
    for p in parts:
        e = json.loads(p)
        et = e["EventType"]
        if et in (ORCH_STARTED, ORCH_COMPLETED):
            continue
        d: dict[str, Any] = {"EventType": EVENT_NAMES.get(et, str(et)), "Timestamp": e["Timestamp"]}
        for k in ("Name", "FireAt", "Reason", "Details", "InstanceId", "OrchestrationStatus"):
            if e.get(k) is not None:
                d[k] = e[k]
        if e.get("EventId", -1) >= 0:
            d["EventId"] = e["EventId"]
        for k in ("TaskScheduledId", "TimerId"):
            if e.get(k) is not None:
                d["ScheduledId" if k == "TaskScheduledId" else k] = e[k]
        if with_output and e.get("Result") is not None:
            d["Result"] = loads_or_text(e["Result"])
        if et == EXECUTION_STARTED and e.get("Input") is not None:
            d["Input"] = loads_or_text(e["Input"])
        out.append(d)
    return out
