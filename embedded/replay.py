"""Replay: which inbox messages one episode delivers, the payload the SDK replays, the SDK call.

An episode hands the orchestrator its whole history plus the new events, exactly as the Durable
extension sends them to the Python worker, and reads back the action list (or the
`$OutOfProcData$:` state when the orchestrator raised). Also the fidelity guard, which replays the
same payload on an SDK context we own and compares its open task ids with the host's.
"""

from __future__ import annotations

import json
import logging

from azure.functions import meta
from azure.functions.durable_functions import OrchestrationTriggerConverter

from .appmodel import FunctionInfo
from .protocol import (
    EVENT_RAISED,
    OOP_MARKER,
    SUB_COMPLETED,
    SUB_FAILED,
    TASK_COMPLETED,
    TASK_FAILED,
    TIMER_FIRED,
    make_event,
)
from .records import InstanceState
from .scheduling import is_allocating

log = logging.getLogger("embedded")


def sort_messages(
    st: InstanceState, msgs: list[tuple[int, dict]], ts: str
) -> tuple[list[int], list[dict], tuple[dict, dict] | None]:
    """Split an instance's inbox into (consumed ids, events to deliver, the allocating message).

    At most one message that makes the SDK allocate an id by itself (retry machinery) is taken
    per episode, and its event goes last; a second one waits for the next episode. Stale messages
    (older execution, duplicate delivery) are consumed silently. Changes `st.model` (open tasks,
    event buffer) as the events are taken.
    """
    model = st.model
    opened = model["open"]
    row = st.row
    consumed: list[int] = []
    delivered: list[dict] = []
    allocating: tuple[dict, dict] | None = None
    for mid, m in msgs:
        t = m["t"]
        if t in ("start", "tick"):
            consumed.append(mid)
        elif t == "event":
            consumed.append(mid)
            model["buffer"].append([m["name"], m.get("input")])
        elif m.get("x") != row.execution_id or str(m.get("id")) not in opened:
            consumed.append(mid)  # stale: an older execution, or a duplicate delivery
        else:
            entry = opened[str(m["id"])]
            if is_allocating(entry, m):
                if allocating is None:
                    allocating = (m, entry)
                    consumed.append(mid)
                continue  # a second allocating event waits for the next episode
            consumed.append(mid)
            delivered.append(result_event(m, entry, ts))
            del opened[str(m["id"])]
    deliver_buffered(model, delivered, ts)
    if allocating is not None:
        m, entry = allocating
        delivered.append(result_event(m, entry, ts))
        del opened[str(m["id"])]
    return consumed, delivered, allocating


def deliver_buffered(model: dict, delivered: list[dict], ts: str) -> None:
    """External events raised before the orchestration waited for them, now that it waits."""
    waiting = model["waiting"]
    keep = []
    for name, inp in model["buffer"]:
        if waiting.get(name, 0) > 0:
            waiting[name] -= 1
            delivered.append(make_event(EVENT_RAISED, ts, Name=name, Input=inp))
        else:
            keep.append([name, inp])
    model["buffer"] = keep


def result_event(m: dict, entry: dict, ts: str) -> dict:
    tid = m["id"]
    if m["t"] == "timer":
        return make_event(TIMER_FIRED, ts, TimerId=tid, FireAt=m.get("fire_at"))
    if m["t"] == "done":
        if m["ok"]:
            return make_event(TASK_COMPLETED, ts, TaskScheduledId=tid, Result=m.get("r"))
        return make_event(
            TASK_FAILED, ts, TaskScheduledId=tid, Reason=m.get("reason"), Details=m.get("details")
        )
    if m["ok"]:
        return make_event(SUB_COMPLETED, ts, TaskScheduledId=tid, Result=m.get("r"))
    return make_event(SUB_FAILED, ts, TaskScheduledId=tid, Reason=m.get("reason"), Details=m.get("details"))


def build_payload(st: InstanceState, new_events: list[dict]) -> str:
    """The JSON string the extension sends the worker for one episode."""
    hist = ",".join(st.parts + [json.dumps(e) for e in new_events])
    return (
        '{"history":['
        + hist
        + '],"input":'
        + json.dumps(st.row.input)
        + ',"instanceId":'
        + json.dumps(st.row.instance_id)
        + ',"isReplaying":'
        + ("true" if st.parts else "false")
        + ',"parentInstanceId":'
        + json.dumps(st.row.parent_instance_id)
        + ',"upperSchemaVersion":2,"upperSchemaVersionNew":2'
        + ',"defaultHttpAsyncRequestSleepTimeMillseconds":30000}'
    )


def call_orchestrator(functions: dict[str, FunctionInfo], name: str, payload: str) -> tuple[dict, str | None]:
    """Run the registered orchestrator as the Python worker does: (state, error or None)."""
    fi = functions.get(name)
    if fi is None or fi.trigger_type != "orchestrationTrigger":
        return (
            {},
            f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function.",
        )
    try:
        ctx = OrchestrationTriggerConverter.decode(
            meta.Datum(type="string", value=payload), trigger_metadata=None
        )
        out = fi.func(ctx)
        return json.loads(out), None
    except Exception as e:
        msg = str(e)
        idx = msg.find(OOP_MARKER)
        if idx >= 0:
            try:
                state = json.loads(msg[idx + len(OOP_MARKER) :])
                return state, state.get("error") or msg[:idx].strip()
            except ValueError:
                pass
        log.exception("orchestrator %s raised outside the SDK protocol", name)
        return {}, f"{type(e).__name__}: {e}"


def fidelity_check(fi: FunctionInfo, st: InstanceState, payload: str) -> str | None:
    """Replay the same payload on a context we own; a message when the SDK's open task ids differ
    from the host's (numbering drift), else None."""
    from azure.durable_functions.models.DurableOrchestrationContext import DurableOrchestrationContext
    from azure.durable_functions.models.TaskOrchestrationExecutor import TaskOrchestrationExecutor

    fn = getattr(fi.func, "orchestrator_function", None)
    if fn is None:
        return None
    ctx = DurableOrchestrationContext.from_json(payload)
    ctx._input_expected_type = getattr(fi.func, "_df_input_type", None)
    try:
        TaskOrchestrationExecutor().execute(ctx, ctx.histories, fn)
    except Exception:
        return None
    sdk = {k for k, v in ctx.open_tasks.items() if isinstance(k, int) and v}
    host = {int(k) for k, e in st.model["open"].items()}
    if sdk != host:
        return (
            f"fidelity guard: {st.row.instance_id} ({st.row.name}) open ids differ: "
            f"sdk-only={sorted(sdk - host)[:10]} host-only={sorted(host - sdk)[:10]}"
        )
    return None
