"""The orchestration engine: drives the real durable SDK through its worker-facing JSON protocol.

Per episode it builds the history the Durable extension would send, calls the registered
orchestrator exactly like the Python worker does, reads back the action list, numbers new
actions the way the SDK numbers its tasks, and commits everything in one SQLite transaction.

Task-id rule (see shared/durable-protocol.md): ids are positions in the flattened, growing
action list, plus ids the SDK allocates by itself while replaying retryable tasks (a retry
timer after each failure, a rescheduled task after each retry timer). The SDK allocates those
while it processes the failure/timer event, so the host delivers at most one such event per
episode and puts it last: then every id the user code took earlier in the episode is already
visible as a new action when the host allocates the retry id.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import traceback
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter, OrchestrationTriggerConverter

from .appmodel import FunctionInfo
from .clock import Clock
from .loop import run_sync
from .store import TERMINAL, InstanceRow, Store, put_message

log = logging.getLogger("embedded")

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


class EngineError(Exception):
    """A request the engine refuses; carries the HTTP status the API should answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class InstanceState:
    """In-memory cache of one running instance: stored row, host model, played history."""

    row: InstanceRow
    model: dict
    parts: list[str]  # stored history events (JSON, IsPlayed true), in order
    last_end: float = 0.0
    last_duration: float = 0.0


@dataclass
class ActivityJob:
    row_id: int
    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input: str | None


@dataclass
class Completion:
    job: ActivityJob
    ok: bool
    result: str | None = None
    reason: str | None = None
    details: str | None = None


@dataclass
class _Episode:
    """What one episode produces, committed in one transaction."""

    events: list[dict] = field(default_factory=list)
    activities: list[tuple] = field(default_factory=list)  # (task_id, name, input)
    timers: list[tuple] = field(default_factory=list)  # (timer_id, fire_at str)
    cancel_timers: list[int] = field(default_factory=list)
    children: list[dict] = field(default_factory=list)
    messages: list[tuple[str, dict]] = field(default_factory=list)


def new_model() -> dict:
    return {"next_id": 0, "n_actions": 0, "open": {}, "waiting": {}, "buffer": []}


class Engine:
    """Dispatcher thread + activity worker pool over one state database."""

    def __init__(
        self,
        store: Store,
        functions: dict[str, FunctionInfo],
        clock: Clock,
        workers: int,
        client_json: callable,
        fidelity_guard: bool = False,
    ) -> None:
        self.store = store
        self.functions = functions
        self.clock = clock
        self.workers = max(1, workers)
        self.client_json = client_json
        self.fidelity_guard = fidelity_guard
        self.guard_errors: list[str] = []
        self.episodes = 0
        self.cache: dict[str, InstanceState] = {}
        self.inflight: dict[str, int] = defaultdict(int)
        self.live: dict[str, str] = {}  # instance -> running execution id (for skipping dead work)
        self._completions: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._jobs: queue.Queue[ActivityJob | None] = queue.Queue()
        self._running_jobs = 0
        self._jobs_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.ilock = threading.RLock()
        self.idle_event = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for iid, exe, _status in self.store.query(
            "SELECT instance_id, execution_id, status FROM instances WHERE status NOT IN (?,?,?)", TERMINAL
        ):
            self.live[iid] = exe
        for row in self.store.pending_activities():  # at-least-once: re-run what never reported back
            job = ActivityJob(*row)
            self.inflight[job.instance_id] += 1
            self._jobs.put(job)
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"embedded-activity-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._dispatch_loop, name="embedded-dispatcher", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for _ in range(self.workers):
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ activities
    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self.live.get(job.instance_id) != job.execution_id:
                self._completions.put(Completion(job, ok=False, reason="__dead__"))
                self._wake.set()
                continue
            with self._jobs_lock:
                self._running_jobs += 1
            try:
                comp = self._run_activity(job)
            finally:
                with self._jobs_lock:
                    self._running_jobs -= 1
            self._completions.put(comp)
            self._wake.set()

    def _run_activity(self, job: ActivityJob) -> Completion:
        fi = self.functions.get(job.name)
        if fi is None or fi.trigger_type != "activityTrigger":
            return Completion(
                job,
                ok=False,
                reason=f"The function '{job.name}' doesn't exist, is disabled, "
                "or is not an activity function.",
                details="",
            )
        try:
            value = ActivityTriggerConverter.decode(
                meta.Datum(type="json", value=job.input if job.input is not None else "null"),
                trigger_metadata=None,
            )
            kwargs = self.binding_kwargs(fi, {fi.trigger["name"]: value}, job.name)
            result = run_sync(fi.func(**kwargs)) if fi.is_async else fi.func(**kwargs)
            out = ActivityTriggerConverter.encode(result, expected_type=None).value
            return Completion(job, ok=True, result=out)
        except Exception as e:
            log.warning("activity %s failed for %s: %s", job.name, job.instance_id, e)
            return Completion(
                job,
                ok=False,
                reason=f"Activity function '{job.name}' failed: {type(e).__name__}: {e}",
                details="".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next)),
            )

    def binding_kwargs(self, fi: FunctionInfo, base: dict, invocation: str) -> dict:
        """Trigger value plus the bindings the embedded host can supply (durable client, context)."""
        kwargs = dict(base)
        for name in fi.client_params:
            kwargs[name] = self.client_json()
        if "context" in fi.params and "context" not in kwargs:
            kwargs["context"] = _InvocationContext(fi.name, invocation)
        return kwargs

    def _dispatch_jobs(
        self, instance_id: str, execution_id: str, rows: list[tuple[int, int, str, str]]
    ) -> None:
        for row_id, task_id, name, inp in rows:
            self.inflight[instance_id] += 1
            self._jobs.put(ActivityJob(row_id, instance_id, execution_id, task_id, name, inp))

    def _drain_completions(self) -> None:
        comps: list[Completion] = []
        while True:
            try:
                comps.append(self._completions.get_nowait())
            except queue.Empty:
                break
        if not comps:
            return
        with self.store.tx() as db:
            db.executemany("DELETE FROM activities WHERE id=?", [(c.job.row_id,) for c in comps])
            for c in comps:
                if c.reason == "__dead__":
                    continue
                put_message(
                    db,
                    c.job.instance_id,
                    {
                        "t": "done",
                        "x": c.job.execution_id,
                        "id": c.job.task_id,
                        "ok": c.ok,
                        "r": c.result,
                        "reason": c.reason,
                        "details": c.details,
                    },
                )
        for c in comps:
            self.inflight[c.job.instance_id] -= 1

    # ------------------------------------------------------------------ timers
    def _fire_timers(self) -> None:
        now = fmt_ts(self.clock.now())
        due = self.store.query(
            "SELECT id, instance_id, execution_id, timer_id, fire_at FROM timers "
            "WHERE fire_at <= ? ORDER BY fire_at, id",
            (now,),
        )
        if not due:
            return
        with self.store.tx() as db:
            for tid, iid, exe, timer_id, fire_at in due:
                db.execute("DELETE FROM timers WHERE id=?", (tid,))
                put_message(db, iid, {"t": "timer", "x": exe, "id": timer_id, "fire_at": fire_at})

    # ------------------------------------------------------------------ dispatcher
    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                progressed = self._dispatch_once()
            except Exception:
                log.exception("dispatcher error")
                progressed = False
                time.sleep(0.2)
            if progressed:
                continue
            wait = 0.5
            nxt = self.store.next_timer()
            with self._jobs_lock:
                busy = self._running_jobs > 0 or not self._jobs.empty()
            if not busy and self._completions.empty() and not self.store.inbox_instances():
                self.idle_event.set()
                if nxt and self.clock.idle(parse_ts(nxt)):
                    continue
            else:
                self.idle_event.clear()
            if nxt and not self.clock.virtual:
                wait = max(0.0, min(wait, (parse_ts(nxt) - self.clock.now()).total_seconds()))
            self._wake.wait(wait)
            self._wake.clear()

    def _dispatch_once(self) -> bool:
        self._drain_completions()
        self._fire_timers()
        ran = False
        for iid in self.store.inbox_instances():
            if self._stop.is_set():
                break
            st = self.cache.get(iid)
            if (
                st is not None
                and self.inflight.get(iid, 0) > 0
                and st.last_end
                and time.monotonic() < st.last_end + min(st.last_duration, 2.0)
            ):
                continue  # let more completions batch up: replay cost stays linear
            self.idle_event.clear()
            if self.run_instance(iid):
                ran = True
                self._drain_completions()
        return ran

    # ------------------------------------------------------------------ instance state
    def _load(self, iid: str) -> InstanceState | None:
        st = self.cache.get(iid)
        if st is not None:
            return st
        row = self.store.get_instance(iid)
        if row is None:
            return None
        st = InstanceState(row=row, model=json.loads(row.model), parts=self.store.history(iid))
        if row.status not in TERMINAL:
            self.cache[iid] = st
        return st

    def forget(self, iid: str) -> None:
        with self.ilock:
            self.cache.pop(iid, None)

    # ------------------------------------------------------------------ one episode
    def run_instance(self, iid: str) -> bool:
        """Process the inbox of one instance: at most one orchestrator episode. True if it did work."""
        with self.ilock:
            st = self._load(iid)
        msgs = self.store.inbox(iid)
        if not msgs:
            return False
        if st is None:
            self._consume_only(iid, [m[0] for m in msgs])
            return True
        row = st.row
        term = [m for _, m in msgs if m["t"] == "terminate"]
        if row.status in TERMINAL:
            self._consume_only(iid, [m[0] for m in msgs])
            self.forget(iid)
            return True
        if term:
            self._terminate(st, term[0].get("reason") or "", [m[0] for m in msgs])
            return True
        t0 = time.monotonic()
        now = self.clock.now()
        ts = fmt_ts(now)
        model = st.model
        opened = model["open"]
        ep = _Episode()
        consumed: list[int] = []
        delivered: list[dict] = []
        allocating: tuple[dict, dict] | None = None
        status = row.status
        suspended = status == "Suspended"
        first = not st.parts
        control = [(mid, m) for mid, m in msgs if m["t"] in ("suspend", "resume")]
        if control:
            for mid, m in control:
                consumed.append(mid)
                if m["t"] == "suspend" and not suspended:
                    delivered.append(_ev(EXEC_SUSPENDED, ts, Reason=m.get("reason")))
                    status, suspended = "Suspended", True
                elif m["t"] == "resume" and suspended:
                    delivered.append(_ev(EXEC_RESUMED, ts, Reason=m.get("reason")))
                    status, suspended = "Running", False
            self._commit(st, ep, consumed, status=status, t0=t0, extra_events=delivered)
            return True
        if suspended:
            return False
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
                if _is_allocating(entry, m):
                    if allocating is None:
                        allocating = (m, entry)
                        consumed.append(mid)
                    continue  # a second allocating event waits for the next episode
                consumed.append(mid)
                delivered.append(self._result_event(m, entry, ts))
                del opened[str(m["id"])]
        self._deliver_buffered(model, delivered, ts)
        if allocating is not None:
            m, entry = allocating
            delivered.append(self._result_event(m, entry, ts))
            del opened[str(m["id"])]
        if not delivered and not first:
            self._commit(st, ep, consumed, status=status, t0=t0)
            return True
        ep.events.append(_ev(ORCH_STARTED, ts))
        if first:
            ep.events.append(
                _ev(
                    EXECUTION_STARTED,
                    ts,
                    Name=row.name,
                    Input=row.input,
                    Version="",
                    OrchestrationInstance={"InstanceId": iid, "ExecutionId": row.execution_id},
                    ParentInstance=(
                        {
                            "OrchestrationInstance": {"InstanceId": row.parent_instance_id},
                            "TaskScheduleId": row.parent_task_id,
                        }
                        if row.parent_instance_id
                        else None
                    ),
                )
            )
            status = "Running"
        ep.events.extend(delivered)
        payload = self._payload(st, ep.events)
        state, error = self._call_orchestrator(row.name, payload)
        self.episodes += 1
        # ---- new actions, numbered as the SDK numbers its tasks
        top = _top_actions(state.get("actions"))
        new_actions = top[model["n_actions"] :]
        can_input: str | None = None
        unsupported: str | None = None
        if error is None:
            for i, action in enumerate(new_actions, start=model["n_actions"]):
                r = self._walk(st, action, [i], ep, now)
                if r is not None:
                    kind, val = r
                    if kind == "can":
                        can_input = val
                    else:
                        unsupported = val
            model["n_actions"] = len(top)
            self._check_cancelled(st, top, ep)
            if allocating is not None:
                self._allocate_retry(st, allocating[0], allocating[1], ep, now)
        if unsupported and error is None:
            error = unsupported
        # ---- outcome
        custom = state.get("customStatus")
        custom_json = json.dumps(custom) if custom is not None else None
        output: str | None = None
        done = False
        if error is not None:
            status, done = "Failed", True
            output = json.dumps(f"Orchestrator function '{row.name}' failed: {error}")
            ep.events.append(
                _ev(
                    EXECUTION_COMPLETED,
                    ts,
                    OrchestrationStatus="Failed",
                    Result=output,
                    FailureDetails={"ErrorMessage": error},
                )
            )
        elif can_input is not None or (state.get("isDone") and _has_can(top)):
            status = "ContinuedAsNew"
        elif state.get("isDone"):
            status, done = "Completed", True
            output = json.dumps(state.get("output"))
            ep.events.append(_ev(EXECUTION_COMPLETED, ts, OrchestrationStatus="Completed", Result=output))
        else:
            ep.events.append(_ev(ORCH_COMPLETED, ts))
        if self.fidelity_guard and error is None and status == "Running":
            self._guard(st, payload)
        self._commit(
            st,
            ep,
            consumed,
            status=status,
            t0=t0,
            custom_json=custom_json,
            output=output,
            done=done,
            error=error,
            can_input=can_input,
        )
        return True

    def _deliver_buffered(self, model: dict, delivered: list[dict], ts: str) -> None:
        waiting = model["waiting"]
        keep = []
        for name, inp in model["buffer"]:
            if waiting.get(name, 0) > 0:
                waiting[name] -= 1
                delivered.append(_ev(EVENT_RAISED, ts, Name=name, Input=inp))
            else:
                keep.append([name, inp])
        model["buffer"] = keep

    def _result_event(self, m: dict, entry: dict, ts: str) -> dict:
        tid = m["id"]
        if m["t"] == "timer":
            return _ev(TIMER_FIRED, ts, TimerId=tid, FireAt=m.get("fire_at"))
        if m["t"] == "done":
            if m["ok"]:
                return _ev(TASK_COMPLETED, ts, TaskScheduledId=tid, Result=m.get("r"))
            return _ev(TASK_FAILED, ts, TaskScheduledId=tid, Reason=m.get("reason"), Details=m.get("details"))
        if m["ok"]:
            return _ev(SUB_COMPLETED, ts, TaskScheduledId=tid, Result=m.get("r"))
        return _ev(SUB_FAILED, ts, TaskScheduledId=tid, Reason=m.get("reason"), Details=m.get("details"))

    def _payload(self, st: InstanceState, new_events: list[dict]) -> str:
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

    def _call_orchestrator(self, name: str, payload: str) -> tuple[dict, str | None]:
        fi = self.functions.get(name)
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

    def _next_id(self, model: dict) -> int:
        n = model["next_id"]
        model["next_id"] = n + 1
        return n

    def _walk(self, st: InstanceState, a: dict, path: list[int], ep: _Episode, now: datetime) -> tuple | None:
        model = st.model
        at = a.get("actionType")
        ts = fmt_ts(now)
        if at in (A_ALL, A_ANY):
            res = None
            for j, child in enumerate(a.get("compoundActions") or []):
                r = self._walk(st, child, [*path, j], ep, now)
                res = res or r
            return res
        if at in (A_ACTIVITY, A_ACTIVITY_RETRY):
            tid = self._next_id(model)
            entry: dict = {"k": "act", "name": a["functionName"], "input": a.get("input")}
            if at == A_ACTIVITY_RETRY:
                entry["retry"] = _retry_state(a)
            model["open"][str(tid)] = entry
            self._schedule_activity(tid, entry, ep, ts)
            return None
        if at in (A_SUB, A_SUB_RETRY):
            tid = self._next_id(model)
            entry = {
                "k": "sub",
                "name": a["functionName"],
                "input": a.get("input"),
                "iid": a.get("instanceId"),
                "fixed": bool(a.get("instanceId")),
            }
            if at == A_SUB_RETRY:
                entry["retry"] = _retry_state(a)
            model["open"][str(tid)] = entry
            self._schedule_sub(st, tid, entry, ep, ts)
            return None
        if at == A_TIMER:
            tid = self._next_id(model)
            fire_at = fmt_ts(parse_ts(a["fireAt"]))
            entry = {"k": "timer", "path": path, "fire_at": fire_at}
            if a.get("isCanceled"):
                entry["cancelled"] = True
            else:
                ep.timers.append((tid, fire_at))
            model["open"][str(tid)] = entry
            ep.events.append(_ev(TIMER_CREATED, ts, event_id=tid, FireAt=fire_at))
            return None
        if at == A_WAIT:
            name = a.get("externalEventName")
            model["waiting"][name] = model["waiting"].get(name, 0) + 1
            return None
        if at == A_CAN:
            self._next_id(model)
            return ("can", a.get("input"))
        if at == A_HTTP:
            tid = self._next_id(model)
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
            ep.events.append(_ev(TASK_SCHEDULED, ts, event_id=tid, Name="BuiltIn::HttpActivity"))
            return None
        if at in (A_ENTITY, A_SIGNAL):
            self._next_id(model)
            return ("unsupported", "durable entities are not supported by the embedded host")
        return ("unsupported", f"unknown action type {at}")

    def _schedule_activity(self, tid: int, entry: dict, ep: _Episode, ts: str) -> None:
        ep.activities.append((tid, entry["name"], entry.get("input")))
        ep.events.append(_ev(TASK_SCHEDULED, ts, event_id=tid, Name=entry["name"], Input=entry.get("input")))

    def _schedule_sub(self, st: InstanceState, tid: int, entry: dict, ep: _Episode, ts: str) -> None:
        if not entry.get("fixed"):
            entry["iid"] = f"{st.row.instance_id}:{tid}"
        ep.children.append(
            {"iid": entry["iid"], "name": entry["name"], "input": entry.get("input"), "task_id": tid}
        )
        ep.events.append(
            _ev(
                SUB_CREATED,
                ts,
                event_id=tid,
                Name=entry["name"],
                InstanceId=entry["iid"],
                Input=entry.get("input"),
            )
        )

    def _check_cancelled(self, st: InstanceState, top: list, ep: _Episode) -> None:
        for sid, entry in st.model["open"].items():
            if entry.get("k") != "timer" or entry.get("cancelled"):
                continue
            a = _at_path(top, entry["path"])
            if a is not None and a.get("isCanceled"):
                entry["cancelled"] = True
                ep.cancel_timers.append(int(sid))

    def _allocate_retry(self, st: InstanceState, m: dict, entry: dict, ep: _Episode, now: datetime) -> None:
        model = st.model
        ts = fmt_ts(now)
        if entry.get("k") == "rtimer":
            of = dict(entry["of"])
            of["retry"] = dict(of["retry"], n=of["retry"]["n"] + 1)
            nid = self._next_id(model)
            model["open"][str(nid)] = of
            if of["k"] == "act":
                self._schedule_activity(nid, of, ep, ts)
            else:
                self._schedule_sub(st, nid, of, ep, ts)
            return
        tid = self._next_id(model)
        fire_at = fmt_ts(now + timedelta(milliseconds=entry["retry"]["ms"]))
        model["open"][str(tid)] = {"k": "rtimer", "of": entry, "fire_at": fire_at}
        ep.timers.append((tid, fire_at))
        ep.events.append(_ev(TIMER_CREATED, ts, event_id=tid, FireAt=fire_at))

    def _guard(self, st: InstanceState, payload: str) -> None:
        """Replay the same payload on a context we own; compare the SDK's open task ids with ours."""
        from azure.durable_functions.models.DurableOrchestrationContext import DurableOrchestrationContext
        from azure.durable_functions.models.TaskOrchestrationExecutor import TaskOrchestrationExecutor

        fi = self.functions[st.row.name]
        fn = getattr(fi.func, "orchestrator_function", None)
        if fn is None:
            return
        ctx = DurableOrchestrationContext.from_json(payload)
        ctx._input_expected_type = getattr(fi.func, "_df_input_type", None)
        try:
            TaskOrchestrationExecutor().execute(ctx, ctx.histories, fn)
        except Exception:
            return
        sdk = {k for k, v in ctx.open_tasks.items() if isinstance(k, int) and v}
        host = {int(k) for k, e in st.model["open"].items()}
        if sdk != host:
            msg = (
                f"fidelity guard: {st.row.instance_id} ({st.row.name}) open ids differ: "
                f"sdk-only={sorted(sdk - host)[:10]} host-only={sorted(host - sdk)[:10]}"
            )
            log.error(msg)
            self.guard_errors.append(msg)

    # ------------------------------------------------------------------ commit
    def _consume_only(self, iid: str, ids: list[int]) -> None:
        with self.store.tx() as db:
            db.executemany("DELETE FROM inbox WHERE id=?", [(i,) for i in ids])

    def _commit(
        self,
        st: InstanceState,
        ep: _Episode,
        consumed: list[int],
        *,
        status: str,
        t0: float,
        custom_json: str | None = None,
        output: str | None = None,
        done: bool = False,
        error: str | None = None,
        can_input: str | None = None,
        extra_events: list[dict] | None = None,
    ) -> None:
        row = st.row
        iid = row.instance_id
        now_s = fmt_ts(self.clock.now())
        events = ep.events + (extra_events or [])
        new_parts = [json.dumps(dict(e, IsPlayed=True)) for e in events]
        jobs: list[tuple[int, int, str, str]] = []
        model = st.model
        if can_input is not None or status == "ContinuedAsNew":
            new_exec = uuid.uuid4().hex
            buffer = model.get("buffer", [])
            model = new_model()
            model["buffer"] = buffer  # events raised early carry over to the new execution
        with self.ilock, self.store.tx() as db:
            cur = db.execute("SELECT execution_id FROM instances WHERE instance_id=?", (iid,)).fetchone()
            if cur is None or cur[0] != row.execution_id:
                self.cache.pop(iid, None)  # purged or restarted meanwhile: this episode is void
                return
            db.executemany("DELETE FROM inbox WHERE id=?", [(i,) for i in consumed])
            if status == "ContinuedAsNew":
                db.execute("DELETE FROM history WHERE instance_id=?", (iid,))
                db.execute("DELETE FROM timers WHERE instance_id=?", (iid,))
                db.execute(
                    "UPDATE instances SET status='Running', input=?, output=NULL, custom_status=?, "
                    "last_updated_time=?, execution_id=?, model=? WHERE instance_id=?",
                    (can_input, custom_json, now_s, new_exec, json.dumps(model), iid),
                )
                put_message(db, iid, {"t": "start"})
            else:
                base = len(st.parts)
                db.executemany(
                    "INSERT INTO history(instance_id, seq, event) VALUES (?,?,?)",
                    [(iid, base + k, p) for k, p in enumerate(new_parts)],
                )
                for tid, name, inp in ep.activities:
                    c = db.execute(
                        "INSERT INTO activities(instance_id, execution_id, task_id, name, input) "
                        "VALUES (?,?,?,?,?)",
                        (iid, row.execution_id, tid, name, inp),
                    )
                    jobs.append((c.lastrowid, tid, name, inp))
                db.executemany(
                    "INSERT INTO timers(instance_id, execution_id, timer_id, fire_at) VALUES (?,?,?,?)",
                    [(iid, row.execution_id, tid, fa) for tid, fa in ep.timers],
                )
                db.executemany(
                    "DELETE FROM timers WHERE instance_id=? AND execution_id=? AND timer_id=?",
                    [(iid, row.execution_id, tid) for tid in ep.cancel_timers],
                )
                for ch in ep.children:
                    self._create_child(db, st, ch, now_s)
                for target, msg in ep.messages:
                    put_message(db, target, msg)
                if done:
                    db.execute("DELETE FROM timers WHERE instance_id=?", (iid,))
                    db.execute("DELETE FROM activities WHERE instance_id=?", (iid,))
                if model["buffer"] and any(model["waiting"].get(n, 0) > 0 for n, _ in model["buffer"]):
                    put_message(db, iid, {"t": "tick"})
                db.execute(
                    "UPDATE instances SET status=?, output=COALESCE(?, output), custom_status=?, "
                    "last_updated_time=?, model=? WHERE instance_id=?",
                    (
                        status,
                        output,
                        custom_json if custom_json is not None else row.custom_status,
                        now_s,
                        json.dumps(model),
                        iid,
                    ),
                )
                if done and row.parent_instance_id:
                    msg = {
                        "t": "sub",
                        "x": row.parent_execution_id,
                        "id": row.parent_task_id,
                        "ok": status == "Completed",
                    }
                    if status == "Completed":
                        msg["r"] = output
                    else:
                        msg["reason"] = f"Orchestrator function '{row.name}' failed: {error}"
                        msg["details"] = ""
                    put_message(db, row.parent_instance_id, msg)
        # ---- after commit: cache and dispatch
        st.last_end = time.monotonic()
        st.last_duration = st.last_end - t0
        if status == "ContinuedAsNew":
            self.cache.pop(iid, None)
            self.live[iid] = new_exec
            self._wake.set()
            return
        row.status = status
        if custom_json is not None:
            row.custom_status = custom_json
        if done:
            self.cache.pop(iid, None)
            self.live.pop(iid, None)
        else:
            st.parts.extend(new_parts)
            self.live[iid] = row.execution_id
        if jobs:
            self._dispatch_jobs(iid, row.execution_id, jobs)
        if ep.children or ep.messages or done:
            self._wake.set()

    def _create_child(self, db: Any, st: InstanceState, ch: dict, now_s: str) -> None:
        existing = db.execute("SELECT status FROM instances WHERE instance_id=?", (ch["iid"],)).fetchone()
        exe = uuid.uuid4().hex
        if existing is not None:
            if existing[0] not in TERMINAL:
                put_message(
                    db,
                    st.row.instance_id,
                    {
                        "t": "sub",
                        "x": st.row.execution_id,
                        "id": ch["task_id"],
                        "ok": False,
                        "reason": f"An orchestration instance with ID '{ch['iid']}' is already running.",
                        "details": "",
                    },
                )
                return
            _delete_instance(db, ch["iid"])
        db.execute(
            "INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                ch["iid"],
                ch["name"],
                "Pending",
                ch.get("input"),
                None,
                None,
                now_s,
                now_s,
                st.row.instance_id,
                ch["task_id"],
                st.row.execution_id,
                exe,
                json.dumps(new_model()),
            ),
        )
        put_message(db, ch["iid"], {"t": "start"})
        self.cache.pop(ch["iid"], None)
        self.live[ch["iid"]] = exe

    def _terminate(self, st: InstanceState, reason: str, consumed: list[int]) -> None:
        row = st.row
        iid = row.instance_id
        now_s = fmt_ts(self.clock.now())
        ev = json.dumps(_ev(EXECUTION_TERMINATED, now_s, Input=json.dumps(reason), IsPlayed=True))
        with self.ilock, self.store.tx() as db:
            db.executemany("DELETE FROM inbox WHERE id=?", [(i,) for i in consumed])
            db.execute(
                "INSERT INTO history(instance_id, seq, event) VALUES (?,?,?)", (iid, len(st.parts), ev)
            )
            db.execute("DELETE FROM timers WHERE instance_id=?", (iid,))
            db.execute("DELETE FROM activities WHERE instance_id=?", (iid,))
            db.execute(
                "UPDATE instances SET status='Terminated', output=?, last_updated_time=? WHERE instance_id=?",
                (json.dumps(reason), now_s, iid),
            )
            for entry in st.model["open"].values():
                target = (
                    entry.get("iid")
                    if entry.get("k") == "sub"
                    else (entry["of"].get("iid") if entry.get("k") == "rtimer" else None)
                )
                if target:
                    put_message(db, target, {"t": "terminate", "reason": reason})
            if row.parent_instance_id:
                put_message(
                    db,
                    row.parent_instance_id,
                    {
                        "t": "sub",
                        "x": row.parent_execution_id,
                        "id": row.parent_task_id,
                        "ok": False,
                        "reason": f"Orchestration '{iid}' was terminated: {reason}",
                        "details": "",
                    },
                )
        self.cache.pop(iid, None)
        self.live.pop(iid, None)
        self._wake.set()

    # ------------------------------------------------------------------ client operations
    def start_instance(self, name: str, instance_id: str | None, input_json: str | None) -> str:
        fi = self.functions.get(name)
        if fi is None or fi.trigger_type != "orchestrationTrigger":
            raise EngineError(
                400,
                f"The function '{name}' doesn't exist, is disabled, or is not an "
                "orchestrator function. Additional info: no orchestrator of that name.",
            )
        iid = instance_id or uuid.uuid4().hex
        if not iid or len(iid) > 256 or any(c in iid for c in "/\\#?") or any(ord(c) < 32 for c in iid):
            raise EngineError(400, f"Instance ID '{iid}' is not valid.")
        now_s = fmt_ts(self.clock.now())
        exe = uuid.uuid4().hex
        with self.ilock, self.store.tx() as db:
            existing = db.execute("SELECT status FROM instances WHERE instance_id=?", (iid,)).fetchone()
            if existing is not None:
                if existing[0] not in TERMINAL:
                    raise EngineError(
                        409,
                        f"An Orchestration instance with the status {existing[0]} already exists: '{iid}'.",
                    )
                _delete_instance(db, iid)
            db.execute(
                "INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    iid,
                    name,
                    "Pending",
                    input_json,
                    None,
                    None,
                    now_s,
                    now_s,
                    None,
                    None,
                    None,
                    exe,
                    json.dumps(new_model()),
                ),
            )
            put_message(db, iid, {"t": "start"})
            self.cache.pop(iid, None)
            self.live[iid] = exe
        self._wake.set()
        return iid

    def send(self, iid: str, msg: dict, *, allow_suspended: bool = True) -> int:
        """Queue a control message; returns the HTTP status the management API documents."""
        with self.store.tx() as db:
            cur = db.execute("SELECT status FROM instances WHERE instance_id=?", (iid,)).fetchone()
            if cur is None:
                return 404
            if cur[0] in TERMINAL:
                return 410
            put_message(db, iid, msg)
        self._wake.set()
        return 202

    def purge(self, iid: str) -> int:
        with self.ilock, self.store.tx() as db:
            cur = db.execute("SELECT status FROM instances WHERE instance_id=?", (iid,)).fetchone()
            if cur is None or cur[0] not in TERMINAL:
                return 0
            _delete_instance(db, iid)
        self.cache.pop(iid, None)
        return 1

    def status(
        self, iid: str, show_history: bool = False, show_history_output: bool = False, show_input: bool = True
    ) -> dict | None:
        row = self.store.get_instance(iid)
        if row is None:
            return None
        return self.status_of(
            row, show_input=show_input, show_history=show_history, show_history_output=show_history_output
        )

    def status_of(
        self,
        row: InstanceRow,
        *,
        show_input: bool,
        show_history: bool = False,
        show_history_output: bool = False,
    ) -> dict:
        d: dict[str, Any] = {
            "name": row.name,
            "instanceId": row.instance_id,
            "runtimeStatus": row.status,
            "input": _loads(row.input) if show_input else None,
            "customStatus": _loads(row.custom_status),
            "output": _loads(row.output),
            "createdTime": status_time(row.created_time),
            "lastUpdatedTime": status_time(row.last_updated_time),
        }
        if show_history:
            d["historyEvents"] = _public_history(self.store.history(row.instance_id), show_history_output)
        return d


class _InvocationContext:
    """The small part of azure.functions.Context a function usually reads."""

    def __init__(self, function_name: str, invocation: str) -> None:
        self.function_name = function_name
        self.invocation_id = uuid.uuid4().hex
        self.function_directory = ""
        self.trace_context = None
        self.retry_context = None
        self.thread_local_storage = threading.local()


def _ev(etype: int, ts: str, event_id: int = -1, **kw: Any) -> dict:
    e = {"EventType": etype, "EventId": event_id, "IsPlayed": False, "Timestamp": ts}
    e.update(kw)
    return e


def _retry_state(action: dict) -> dict:
    """Host-side retry bookkeeping for a *WithRetry action: first interval, attempt cap, attempt no."""
    ro = action.get("retryOptions") or {}
    return {
        "ms": int(ro.get("firstRetryIntervalInMilliseconds") or 1000),
        "max": int(ro.get("maxNumberOfAttempts") or 1),
        "n": 1,
    }


def _is_allocating(entry: dict, m: dict) -> bool:
    """Does delivering this message make the SDK allocate a task id by itself (retry machinery)?"""
    if entry.get("k") in ("act", "sub") and "retry" in entry:
        return not m.get("ok")
    if entry.get("k") == "rtimer":
        r = entry["of"]["retry"]
        return r["n"] < r["max"]
    return False


def _top_actions(actions: Any) -> list:
    if not actions:
        return []
    if len(actions) == 1 and isinstance(actions[0], list):
        return actions[0]
    flat: list = []
    for group in actions:
        flat.extend(group if isinstance(group, list) else [group])
    return flat


def _has_can(top: list) -> bool:
    return any(isinstance(a, dict) and a.get("actionType") == A_CAN for a in top)


def _at_path(top: list, path: list[int]) -> dict | None:
    try:
        a = top[path[0]]
        for j in path[1:]:
            a = a["compoundActions"][j]
        return a
    except (IndexError, KeyError, TypeError):
        return None


def _delete_instance(db: Any, iid: str) -> None:
    for table in ("instances", "history", "inbox", "timers", "activities"):
        db.execute(f"DELETE FROM {table} WHERE instance_id=?", (iid,))


def _loads(s: str | None) -> Any:
    if s is None:
        return None
    try:
        return json.loads(s)
    except ValueError:
        return s


_EVENT_NAMES = {
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


def _public_history(parts: list[str], with_output: bool) -> list[dict]:
    """History in the management API's shape (orchestrator bookkeeping events left out)."""
    out = []
    for p in parts:
        e = json.loads(p)
        et = e["EventType"]
        if et in (ORCH_STARTED, ORCH_COMPLETED):
            continue
        d: dict[str, Any] = {"EventType": _EVENT_NAMES.get(et, str(et)), "Timestamp": e["Timestamp"]}
        for k in ("Name", "FireAt", "Reason", "Details", "InstanceId", "OrchestrationStatus"):
            if e.get(k) is not None:
                d[k] = e[k]
        if e.get("EventId", -1) >= 0:
            d["EventId"] = e["EventId"]
        for k in ("TaskScheduledId", "TimerId"):
            if e.get(k) is not None:
                d["ScheduledId" if k == "TaskScheduledId" else k] = e[k]
        if with_output and e.get("Result") is not None:
            d["Result"] = _loads(e["Result"])
        if et == EXECUTION_STARTED and e.get("Input") is not None:
            d["Input"] = _loads(e["Input"])
        out.append(d)
    return out


def make_http_request(
    method: str, url: str, headers: dict, params: dict, route_params: dict, body: bytes
) -> func.HttpRequest:
    return func.HttpRequest(
        method=method, url=url, headers=headers, params=params, route_params=route_params, body=body
    )
