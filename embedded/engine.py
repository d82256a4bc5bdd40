"""The orchestration engine: drives the real durable SDK through its worker-facing JSON protocol.

Per episode it builds the history the Durable extension would send, calls the registered
orchestrator exactly like the Python worker does, reads back the action list, numbers new
actions the way the SDK numbers its tasks, and commits everything in one SQLite transaction.

This module holds the coordinator only: the dispatcher loop, one episode from inbox to commit,
and the client operations (start, send, purge, status). The parts it coordinates:

- `protocol`: event/action codes, timestamps, action-list shapes (fixed by the SDK);
- `records`: the in-memory records (cached instance, activity job, completion, episode);
- `replay`: which messages an episode delivers, the payload, the SDK call, the fidelity guard;
- `scheduling`: task-id numbering, timers, sub-orchestrations, retry ids;
- `persistence`: the SQL an episode, a termination or a completion batch writes;
- `activities`: the activity worker pool;
- `health`: storage faults (disk full, locked, I/O errors) and the one the host lives with now.

A storage fault never loses or doubles anything: the episode's transaction rolls back, the
instance's cached state is dropped (it is read back from the database), completions not yet
written are kept, and the dispatcher tries again with back-off until storage recovers; while it
lasts, running instances report it in their status.

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
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from . import persistence, replay, scheduling
from .activities import ActivityPool, binding_kwargs
from .appmodel import FunctionInfo
from .clock import Clock
from .health import BACKOFF_FIRST_S, Health, next_backoff, storage_error
from .protocol import (
    EXEC_RESUMED,
    EXEC_SUSPENDED,
    EXECUTION_COMPLETED,
    EXECUTION_STARTED,
    ORCH_COMPLETED,
    ORCH_STARTED,
    fmt_ts,
    has_continue_as_new,
    loads_or_text,
    make_event,
    parse_ts,
    public_history,
    status_time,
    top_actions,
)
from .records import ActivityJob, EngineError, Episode, InstanceState, new_model
from .store import TERMINAL, InstanceRow, Store, put_message

log = logging.getLogger("embedded")

__all__ = ["Engine", "EngineError"]


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
        self.health = Health()
        self.pool = ActivityPool(
            functions, self.workers, self.live, self.binding_kwargs, self.wake, on_fault=self.health.report
        )
        self._unwritten: list = []  # completions whose write failed: written first next time
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
            self.pool.submit(job)
        self.pool.start()
        t = threading.Thread(target=self._dispatch_loop, name="embedded-dispatcher", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in [*self.pool.stop(), *self._threads]:
            t.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def binding_kwargs(self, fi: FunctionInfo, base: dict, invocation: str) -> dict:
        """Trigger value plus the bindings the embedded host can supply (durable client, context)."""
        return binding_kwargs(fi, base, invocation, self.client_json)

    # ------------------------------------------------------------------ activities and timers
    def _dispatch_jobs(
        self, instance_id: str, execution_id: str, rows: list[tuple[int, int, str, str]]
    ) -> None:
        for row_id, task_id, name, inp in rows:
            self.inflight[instance_id] += 1
            self.pool.submit(ActivityJob(row_id, instance_id, execution_id, task_id, name, inp))

    def _drain_completions(self) -> None:
        comps = self._unwritten + self.pool.take_completions()
        self._unwritten = []
        if not comps:
            return
        try:
            with self.store.tx() as db:
                persistence.write_completions(db, comps)
        except BaseException:
            self._unwritten = comps  # nothing was written: keep them for the next try
            raise
        for c in comps:
            self.inflight[c.job.instance_id] -= 1

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
            persistence.fire_timers(db, due)

    # ------------------------------------------------------------------ dispatcher
    def _dispatch_loop(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._stop.is_set():
            try:
                progressed = self._dispatch_once()
                if not progressed:
                    nxt = self.store.next_timer()
                    inbox = self.store.inbox_instances()
            except Exception as e:
                fault = storage_error(e)
                if fault is None:
                    log.exception("dispatcher error")
                    self._stop.wait(0.2)
                    continue
                if self.health.fault is None:
                    log.error("storage fault, retrying with back-off until it clears: %s", fault)
                self.health.report(fault)
                self._stop.wait(backoff)
                backoff = next_backoff(backoff)
                continue
            if self.health.fault is not None and not self.pool.delayed():
                log.warning("storage is back: %s", self.health.fault.reason)
                self.health.clear()
            backoff = BACKOFF_FIRST_S
            if progressed:
                continue
            wait = 0.5
            busy = self.pool.busy()
            if not busy and not self.pool.has_completions() and not self._unwritten and not inbox:
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
            try:
                did = self.run_instance(iid)
            except BaseException:
                self.forget(iid)  # its cached model may hold this episode's changes: read it back
                raise
            if did:
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
        ep = Episode()
        status = row.status
        suspended = status == "Suspended"
        first = not st.parts
        control = [(mid, m) for mid, m in msgs if m["t"] in ("suspend", "resume")]
        if control:
            consumed: list[int] = []
            delivered: list[dict] = []
            for mid, m in control:
                consumed.append(mid)
                if m["t"] == "suspend" and not suspended:
                    delivered.append(make_event(EXEC_SUSPENDED, ts, Reason=m.get("reason")))
                    status, suspended = "Suspended", True
                elif m["t"] == "resume" and suspended:
                    delivered.append(make_event(EXEC_RESUMED, ts, Reason=m.get("reason")))
                    status, suspended = "Running", False
            self._commit(st, ep, consumed, status=status, t0=t0, extra_events=delivered)
            return True
        if suspended:
            return False
        consumed, delivered, allocating = replay.sort_messages(st, msgs, ts)
        if not delivered and not first:
            self._commit(st, ep, consumed, status=status, t0=t0)
            return True
        ep.events.append(make_event(ORCH_STARTED, ts))
        if first:
            ep.events.append(
                make_event(
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
        payload = replay.build_payload(st, ep.events)
        state, error = replay.call_orchestrator(self.functions, row.name, payload)
        self.episodes += 1
        # ---- new actions, numbered as the SDK numbers its tasks
        top = top_actions(state.get("actions"))
        new_actions = top[model["n_actions"] :]
        can_input: str | None = None
        unsupported: str | None = None
        if error is None:
            for i, action in enumerate(new_actions, start=model["n_actions"]):
                r = scheduling.walk(st, action, [i], ep, now)
                if r is not None:
                    kind, val = r
                    if kind == "can":
                        can_input = val
                    else:
                        unsupported = val
            model["n_actions"] = len(top)
            scheduling.check_cancelled(st, top, ep)
            if allocating is not None:
                scheduling.allocate_retry(st, allocating[0], allocating[1], ep, now)
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
                make_event(
                    EXECUTION_COMPLETED,
                    ts,
                    OrchestrationStatus="Failed",
                    Result=output,
                    FailureDetails={"ErrorMessage": error},
                )
            )
        elif can_input is not None or (state.get("isDone") and has_continue_as_new(top)):
            status = "ContinuedAsNew"
        elif state.get("isDone"):
            status, done = "Completed", True
            output = json.dumps(state.get("output"))
            ep.events.append(
                make_event(EXECUTION_COMPLETED, ts, OrchestrationStatus="Completed", Result=output)
            )
        else:
            ep.events.append(make_event(ORCH_COMPLETED, ts))
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

    def _guard(self, st: InstanceState, payload: str) -> None:
        msg = replay.fidelity_check(self.functions[st.row.name], st, payload)
        if msg:
            log.error(msg)
            self.guard_errors.append(msg)

    # ------------------------------------------------------------------ commit
    def _consume_only(self, iid: str, ids: list[int]) -> None:
        with self.store.tx() as db:
            persistence.consume(db, ids)

    def _commit(
        self,
        st: InstanceState,
        ep: Episode,
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
        created: list[tuple[str, str]] = []
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
            persistence.consume(db, consumed)
            if status == "ContinuedAsNew":
                persistence.write_continue_as_new(db, iid, can_input, custom_json, now_s, new_exec, model)
            else:
                persistence.write_history(db, iid, len(st.parts), new_parts)
                jobs = persistence.write_scheduled(db, st, ep)
                for ch in ep.children:
                    exe = uuid.uuid4().hex
                    if persistence.create_child(db, st, ch, now_s, exe):
                        created.append((ch["iid"], exe))
                for target, msg in ep.messages:
                    put_message(db, target, msg)
                persistence.write_outcome(
                    db,
                    st,
                    status=status,
                    output=output,
                    custom_json=custom_json,
                    now_s=now_s,
                    model=model,
                    done=done,
                    error=error,
                )
        # ---- after commit: cache and dispatch
        for child, exe in created:
            self.cache.pop(child, None)
            self.live[child] = exe
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

    def _terminate(self, st: InstanceState, reason: str, consumed: list[int]) -> None:
        iid = st.row.instance_id
        now_s = fmt_ts(self.clock.now())
        with self.ilock, self.store.tx() as db:
            persistence.write_terminate(db, st, reason, consumed, now_s)
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
                persistence.delete_instance(db, iid)
            persistence.insert_instance(db, iid, name, input_json, now_s, exe)
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
            persistence.delete_instance(db, iid)
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
        custom = loads_or_text(row.custom_status)
        fault = self.health.overlay() if row.status not in TERMINAL else None
        if fault is not None and (custom is None or isinstance(custom, dict)):
            custom = {**(custom or {}), "hostFault": fault}  # read-time only, never stored
        d: dict[str, Any] = {
            "name": row.name,
            "instanceId": row.instance_id,
            "runtimeStatus": row.status,
            "input": loads_or_text(row.input) if show_input else None,
            "customStatus": custom,
            "output": loads_or_text(row.output),
            "createdTime": status_time(row.created_time),
            "lastUpdatedTime": status_time(row.last_updated_time),
        }
        if show_history:
            d["historyEvents"] = public_history(self.store.history(row.instance_id), show_history_output)
        return d
