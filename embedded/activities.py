"""The activity worker pool: runs activity functions on worker threads, collects completions.

Activities are at-least-once (a row that never reported back is run again after a restart); the
pool only runs them and queues their completions, which the engine writes in batches.
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
import uuid
from collections.abc import Callable

from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from .appmodel import FunctionInfo
from .health import BACKOFF_FIRST_S, next_backoff, storage_error
from .loop import run_sync
from .records import ActivityJob, Completion

log = logging.getLogger("embedded")

DEAD = "__dead__"  # completion reason of a job whose execution is gone (nothing to deliver)
STORAGE = "__storage__"  # the activity hit a storage fault (disk full...): run it again later


class InvocationContext:
    """The small part of azure.functions.Context a function usually reads."""

    def __init__(self, function_name: str, invocation: str) -> None:
        self.function_name = function_name
        self.invocation_id = uuid.uuid4().hex
        self.function_directory = ""
        self.trace_context = None
        self.retry_context = None
        self.thread_local_storage = threading.local()


def binding_kwargs(fi: FunctionInfo, base: dict, invocation: str, client_json: Callable[[], str]) -> dict:
    """Trigger value plus the bindings the embedded host can supply (durable client, context)."""
    kwargs = dict(base)
    for name in fi.client_params:
        kwargs[name] = client_json()
    if "context" in fi.params and "context" not in kwargs:
        kwargs["context"] = InvocationContext(fi.name, invocation)
    return kwargs


class ActivityPool:
    """Worker threads over a job queue; each finished job becomes a Completion.

    `live` maps instance id -> running execution id (owned by the engine): a job of another
    execution is not run. `on_done` wakes the dispatcher. An activity that fails with a storage
    fault (disk full, I/O error: `health.storage_error`) is not reported: `on_fault` is told and
    the job runs again after a back-off (0.2 s doubling to 5 s), until storage is back.
    """

    def __init__(
        self,
        functions: dict[str, FunctionInfo],
        workers: int,
        live: dict[str, str],
        kwargs_for: Callable[[FunctionInfo, dict, str], dict],
        on_done: Callable[[], None],
        on_fault: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.functions = functions
        self.workers = max(1, workers)
        self.live = live
        self.kwargs_for = kwargs_for
        self.on_done = on_done
        self.on_fault = on_fault
        self._completions: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._jobs: queue.Queue[ActivityJob | None] = queue.Queue()
        self._running = 0
        self._delayed = 0  # jobs waiting out a storage back-off
        self._backoff: dict[int, float] = {}  # activity row id -> its next back-off
        self._stopping = False
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"embedded-activity-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> list[threading.Thread]:
        self._stopping = True
        for _ in range(self.workers):
            self._jobs.put(None)
        return self._threads

    def submit(self, job: ActivityJob) -> None:
        self._jobs.put(job)

    def busy(self) -> bool:
        with self._lock:
            return self._running > 0 or self._delayed > 0 or not self._jobs.empty()

    def delayed(self) -> bool:
        """Jobs waiting out a storage back-off."""
        with self._lock:
            return self._delayed > 0

    def has_completions(self) -> bool:
        return not self._completions.empty()

    def take_completions(self) -> list[Completion]:
        comps: list[Completion] = []
        while True:
            try:
                comps.append(self._completions.get_nowait())
            except queue.Empty:
                return comps

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self.live.get(job.instance_id) != job.execution_id:
                self._completions.put(Completion(job, ok=False, reason=DEAD))
                self.on_done()
                continue
            with self._lock:
                self._running += 1
            try:
                comp = self.run(job)
                if comp.reason == STORAGE:
                    self._retry_later(job, comp.details or "storage fault")
                    continue
                self._backoff.pop(job.row_id, None)
            finally:
                with self._lock:
                    self._running -= 1
            self._completions.put(comp)
            self.on_done()

    def _retry_later(self, job: ActivityJob, reason: str) -> None:
        wait = self._backoff.get(job.row_id, BACKOFF_FIRST_S)
        self._backoff[job.row_id] = next_backoff(wait)
        log.warning(
            "activity %s of %s hit a storage fault (%s); again in %.1f s",
            job.name,
            job.instance_id,
            reason,
            wait,
        )
        self.on_fault(reason)
        with self._lock:
            self._delayed += 1

        def again() -> None:
            with self._lock:
                self._delayed -= 1
            if not self._stopping:
                self._jobs.put(job)

        t = threading.Timer(wait, again)
        t.daemon = True
        t.start()

    def run(self, job: ActivityJob) -> Completion:
        """Run one activity the way the Python worker does (decode input, call, encode output)."""
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
            kwargs = self.kwargs_for(fi, {fi.trigger["name"]: value}, job.name)
            result = run_sync(fi.func(**kwargs)) if fi.is_async else fi.func(**kwargs)
            out = ActivityTriggerConverter.encode(result, expected_type=None).value
            return Completion(job, ok=True, result=out)
        except Exception as e:
            fault = storage_error(e)
            if fault is not None:
                return Completion(job, ok=False, reason=STORAGE, details=fault)
            log.warning("activity %s failed for %s: %s", job.name, job.instance_id, e)
            return Completion(
                job,
                ok=False,
                reason=f"Activity function '{job.name}' failed: {type(e).__name__}: {e}",
                details="".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next)),
            )
