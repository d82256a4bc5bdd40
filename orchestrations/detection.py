"""The detection orchestrations: request -> shard groups -> shards -> aggregate -> publish.

`detection_batch` (one per request) plans, fans out groups of shards as sub-orchestrations in a
sliding window, then aggregates and publishes; while groups run it wakes on a durable timer and asks
the `progress` activity how far the running shards are (live customStatus images_scored).
`detection_shard_group` runs its shards in a window.
`detection_shard` submits one compute job, polls it with durable timers (backing off to a cap) and
resubmits on failure or pre-emption; it always *returns* an outcome (task_any/task_all fail fast in
the Python SDK, and the request must see every shard).

Everything here is replay-safe: time comes from the context, names are derived from the input.
"""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskBase, TaskState

from batch.classification import classify_args
from batch.fanout import plan_fanout, shard_images
from batch.status import Stage, custom_status, next_poll_delay, progress_delay

bp = df.Blueprint()

_SIG = re.compile(r"(?i)(sig=)[^&\s\"']+")


def _reason(exc: BaseException | Any, limit: int = 300) -> str:
    """A short, secret-free reason from an activity or sub-orchestration failure."""
    text = str(exc) if exc is not None else "unknown error"
    # The SDK wraps activity errors as "Activity function 'x' failed: <message> \n <details>".
    text = text.split("\n", 1)[0].strip()
    m = re.search(r"failed:\s*(.*)$", text)
    if m and m.group(1):
        text = m.group(1)
    return _SIG.sub(r"\1REDACTED", text)[:limit]


def _call(context: df.DurableOrchestrationContext, opts: dict[str, Any], name: str, arg: Any) -> TaskBase:
    """A request-level activity (plan, aggregate, publish, cleanup), retried with a durable timer
    between attempts when the request's options ask for it: those steps only touch storage, and one
    transient storage error must not throw away hours of GPU work."""
    attempts = int(opts.get("activity_attempts", 1))
    if attempts <= 1:
        return context.call_activity(name, arg)
    retry = df.RetryOptions(max(1, int(float(opts.get("activity_retry_s", 5)) * 1000)), attempts)
    return context.call_activity_with_retry(name, retry, arg)


def _window(context: df.DurableOrchestrationContext, starts: list[Any], limit: int):
    """Run `starts` (callables creating one durable task each) with at most `limit` in flight.

    A generator to be used with `yield from`; returns [(index, ok, result_or_error), ...] in
    completion order.
    """
    pending: list[tuple[TaskBase, int]] = []
    results: list[tuple[int, bool, Any]] = []
    nxt = 0
    while nxt < len(starts) or pending:
        while nxt < len(starts) and len(pending) < limit:
            pending.append((starts[nxt](), nxt))
            nxt += 1
        done = yield context.task_any([t for t, _ in pending])
        for t, i in list(pending):
            if t is done or t.state is not TaskState.RUNNING:
                pending.remove((t, i))
                ok = t.state is TaskState.SUCCEEDED
                results.append((i, ok, t.result))
    return results


@bp.orchestration_trigger(context_name="context")
def detection_batch(context: df.DurableOrchestrationContext):
    """One request: plan, fan out, aggregate, publish, clean up. Output: counts and the output file names."""
    job: dict[str, Any] = context.get_input()
    rid: str = job["request_id"]
    if rid != context.instance_id:  # issue 14: a spec started under another id acts on nothing
        raise RuntimeError("refused: the job spec names another request")
    opts: dict[str, Any] = job["options"]
    stage = Stage.LISTING
    progress: dict[str, int] = {}  # the last counts shown, kept in a failed status too
    context.set_custom_status(custom_status(stage))
    try:
        plan = yield _call(context, opts, "plan_shards", job)
        if plan.get("problem"):  # the request cannot be served as asked (retrying would not help)
            raise RuntimeError(plan["problem"])
        images, shards, size = plan["images"], plan["shards"], plan["shard_size"]
        counts = {"images_total": images, "shards_total": shards}
        progress = dict(counts)
        failed: dict[str, list[int]] = {}
        done = n_failed = scored = 0
        if shards:
            stage = Stage.SCORING
            context.set_custom_status(custom_status(stage, **counts))
            fan = plan_fanout(shards, int(opts["window"]), int(opts.get("group_size", 50)))
            shard_args = {k: job[k] for k in ("request_id", "model", "threshold")}
            shard_args.update(classify_args(job))  # issue 12
            shard_args["options"] = opts

            def start_group(g: int, lo: int, hi: int) -> Any:
                return lambda: context.call_sub_orchestrator(
                    "detection_shard_group",
                    {**shard_args, "first": lo, "stop": hi, "window": fan.group_window},
                    instance_id=f"{rid}-g{g:04d}",
                )

            starts = [start_group(g, lo, hi) for g, (lo, hi) in enumerate(fan.groups)]
            pending: list[tuple[TaskBase, int]] = []
            nxt = 0
            # Live progress between group completions: wake on a durable timer, read the running
            # groups' shard progress files (activity `progress`), show finished + in flight. The timer
            # outlives a group's completion (cancelling and re-creating it would add events: a timer
            # already sent still fires in Azure) and is cancelled once no group runs, so nothing
            # ticks when nothing runs. Its delay grows on long jobs (batch.status.progress_delay)
            # so the history stays a few hundred events. Requests started without the option
            # (older code) keep the old behaviour, so their replays match.
            tick_base = float(opts.get("progress_interval_s", 0) or 0)
            scoring_since = context.current_utc_datetime
            timer: TaskBase | None = None
            in_flight: dict[int, int] = {}  # group -> images done in its shards, as last read
            shown = 0  # images_scored as last shown: never goes backwards while scoring
            while nxt < len(starts) or pending:
                while nxt < len(starts) and len(pending) < fan.concurrent_groups:
                    pending.append((starts[nxt](), nxt))
                    nxt += 1
                waits = [t for t, _ in pending]
                if tick_base > 0 and timer is None:
                    elapsed = (context.current_utc_datetime - scoring_since).total_seconds()
                    timer = context.create_timer(context.current_utc_datetime + timedelta(
                        seconds=progress_delay(tick_base, elapsed)))
                if timer is not None:
                    waits.append(timer)
                yield context.task_any(waits)
                if timer is not None and timer.state is not TaskState.RUNNING:  # a tick is due
                    timer = None
                    running = [g for t, g in pending if t.state is TaskState.RUNNING]
                    if running:
                        try:
                            got = yield context.call_activity("progress", {
                                "request_id": rid, "ranges": [list(fan.groups[g]) for g in running]})
                            in_flight = dict(zip(running, (int(n) for n in got["scored"]), strict=True))
                        except Exception:  # progress is a courtesy: the next tick tries again
                            pass
                changed = False
                for t, g in list(pending):
                    if t.state is TaskState.RUNNING:
                        continue
                    changed = True
                    pending.remove((t, g))
                    in_flight.pop(g, None)
                    lo, hi = fan.groups[g]
                    if t.state is TaskState.SUCCEEDED:
                        res = t.result or {}
                        group_failed = {int(k): v for k, v in (res.get("failed") or {}).items()}
                    else:  # a group orchestrator crashed: its shards count as failed
                        why = f"shard group failed: {_reason(t.result)}"
                        group_failed = dict.fromkeys(range(lo, hi), why)
                    for s in range(lo, hi):
                        if s in group_failed:
                            n_failed += 1
                            failed.setdefault(group_failed[s], []).append(s)
                        else:
                            done += 1
                            scored += shard_images(images, size, s)
                live = max(shown, scored + sum(in_flight.values()))
                if changed or live != shown:
                    shown = live
                    progress = {**counts, "shards_done": done, "shards_failed": n_failed,
                                "images_scored": shown}
                    context.set_custom_status(custom_status(stage, **progress))
            if timer is not None and timer.state is TaskState.RUNNING:  # scoring is over
                timer.cancel()
        stage = Stage.AGGREGATING
        progress = {**counts, "shards_done": done, "shards_failed": n_failed, "images_scored": scored}
        context.set_custom_status(custom_status(stage, **progress))
        # v4 file names need the request's name and submission time; metadata goes into `info`
        naming = {"request_id": rid, "request_name": job.get("request_name"),
                  "submitted": job.get("submitted"), "metadata": job.get("metadata")}
        merged = yield _call(context, opts, "aggregate_results",
                             {**naming, "shards": shards, "failed": failed})
        stage = Stage.PUBLISHING
        context.set_custom_status(custom_status(stage, **progress))
        # names in the output store, not links: status reads sign fresh links (triggers/links.py)
        files = yield _call(context, opts, "publish_results", naming)
        yield _call(context, opts, "cleanup_request", {"request_id": rid})
        message = None
        if images == 0:
            message = "no images matched the request; the results are empty"
        elif plan.get("notes"):
            message = "; ".join(plan["notes"])
        output: dict[str, Any] = {
            "request_id": rid,
            "request_name": job.get("request_name"),
            "images": merged["images"],
            "failed_images": merged["failed_images"],
            "failed_shards": merged["failed_shards"],
            "detections": merged["detections"],
            "sample_seed": plan.get("sample_seed"),
            "output_files": files,
        }
        if message:
            output["message"] = message
        context.set_custom_status(custom_status(Stage.COMPLETED, **progress, message=message))
        if job.get("status_blob"):
            yield context.call_activity("report_request_status", {"name": job["status_blob"], "status": {
                "request_id": rid, "state": "completed", "status_path": f"/api/detections/{rid}",
                **{k: output[k] for k in ("images", "failed_images", "failed_shards")}}})
        return output
    except Exception as exc:
        why = f"{stage.value} failed: {_reason(exc)}"
        context.set_custom_status(custom_status(Stage.FAILED, **progress, message=why))
        try:
            yield _call(context, opts, "cleanup_request", {"request_id": rid})
            if job.get("status_blob"):
                yield context.call_activity("report_request_status", {"name": job["status_blob"], "status": {
                    "request_id": rid, "state": "failed", "error": why}})
        except Exception:  # the secret will expire with its SAS; the failure is what matters
            pass
        raise RuntimeError(why) from None


@bp.orchestration_trigger(context_name="context")
def detection_shard_group(context: df.DurableOrchestrationContext):
    """Shards [first, stop) with at most `window` in flight. Output: {"failed": {shard: reason}}."""
    arg: dict[str, Any] = context.get_input()
    rid = arg["request_id"]
    shard_arg = {k: arg[k] for k in ("request_id", "model", "threshold", "options")}
    shard_arg.update(classify_args(arg))  # issue 12
    shards = list(range(int(arg["first"]), int(arg["stop"])))

    def start(s: int) -> Any:
        return lambda: context.call_sub_orchestrator(
            "detection_shard", {**shard_arg, "shard": s}, instance_id=f"{rid}-s{s:05d}")

    results = yield from _window(context, [start(s) for s in shards], max(1, int(arg["window"])))
    failed: dict[str, str] = {}
    for i, ok, res in results:
        if not ok:
            failed[str(shards[i])] = f"shard orchestration failed: {_reason(res)}"
        elif not res.get("ok"):
            failed[str(shards[i])] = res.get("reason") or "unknown"
    return {"first": shards[0] if shards else 0, "stop": int(arg["stop"]), "failed": failed}


def _cancel_quietly(context: df.DurableOrchestrationContext, arg: dict[str, Any]):
    """Cancel a job being given up on; a failed cancel must not end the shard (it has attempts left,
    and `detection_shard` never raises)."""
    with contextlib.suppress(Exception):
        yield context.call_activity("cancel_shard", arg)


@bp.orchestration_trigger(context_name="context")
def detection_shard(context: df.DurableOrchestrationContext):
    """One shard: submit, poll with durable timers, resubmit on failure; never raises.

    Retry budget (issue 14b): an attempt that ended with the shard's checkpoint further than after
    every earlier attempt made progress and is not counted in `max_attempts`, nor is a pre-empted
    one (as Azure Batch does not count recovery retries against a task's retry count); every
    attempt counts in `max_total_attempts`, and `shard_timeout_s` bounds the shard's whole time.
    Progress is learnt only from activity results (`checkpointed` in poll_shard's answer), so
    replay is deterministic. A request started before these options existed keeps the old budget
    (max_attempts in all).
    """
    arg: dict[str, Any] = context.get_input()
    opts: dict[str, Any] = arg["options"]
    shard = int(arg["shard"])
    base = {"request_id": arg["request_id"], "shard": shard}
    max_attempts = int(opts.get("max_attempts", 3))
    max_total = int(opts.get("max_total_attempts", max_attempts))
    shard_timeout = float(opts.get("shard_timeout_s", 0) or 0)
    initial = float(opts.get("poll_initial_s", 15))
    factor = float(opts.get("poll_factor", 2.0))
    cap = float(opts.get("poll_max_s", 120))
    attempt_timeout = float(opts.get("attempt_timeout_s", 12 * 3600))
    first_start = context.current_utc_datetime
    reason = "not run"
    attempt = charged = best = 0  # attempts, attempts without progress, checkpoint after the best

    def over_time() -> bool:
        elapsed = (context.current_utc_datetime - first_start).total_seconds()
        return shard_timeout > 0 and elapsed > shard_timeout

    while charged < max_attempts and attempt < max_total and not over_time():
        attempt += 1
        try:
            sub = yield context.call_activity("submit_shard", {
                **base, "attempt": attempt, "model": arg["model"], "threshold": arg["threshold"],
                "checkpoint_every": int(opts.get("checkpoint_every", 500)),
                **classify_args(arg),  # issue 12
            })
        except Exception as exc:
            reason = f"submit failed: {_reason(exc)}"
            charged += 1
            continue
        if sub.get("canceled"):
            return {**base, "ok": False, "reason": "canceled", "attempts": attempt}
        job_id = sub["job_id"]
        started = context.current_utc_datetime
        delay = initial
        poll_errors = 0
        while True:
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
            waited = (context.current_utc_datetime - started).total_seconds()
            delay = next_poll_delay(delay, factor, cap, waited)
            try:
                st = yield context.call_activity("poll_shard", {**base, "job_id": job_id})
            except Exception as exc:
                poll_errors += 1
                if poll_errors < 5:
                    continue
                st = {"state": "FAILED", "reason": f"status unavailable: {_reason(exc)}", "active": True}
            state = str(st.get("state", "")).upper()
            if state == "SUCCEEDED":
                return {**base, "ok": True, "attempts": attempt}
            if state in ("FAILED", "PREEMPTED", "CANCELLED", "CANCELED"):
                reason = f"{state.lower()}: {st.get('reason') or 'no reason given'}"
                if st.get("active"):
                    yield from _cancel_quietly(context, {**base, "job_id": job_id})
                if state in ("CANCELLED", "CANCELED"):
                    return {**base, "ok": False, "reason": f"job {reason}", "attempts": attempt}
                done_now = st.get("checkpointed")
                if isinstance(done_now, int) and done_now > best:
                    best = done_now  # progress: this attempt is free
                elif state != "PREEMPTED" or "max_total_attempts" not in opts:
                    charged += 1  # a pre-emption is not the shard's fault (older requests: it was)
                break
            if (context.current_utc_datetime - started).total_seconds() > attempt_timeout:
                yield from _cancel_quietly(context, {**base, "job_id": job_id})
                reason = f"timed out after {int(attempt_timeout)} s"
                charged += 1
                break
            if over_time():
                yield from _cancel_quietly(context, {**base, "job_id": job_id})
                break
    if over_time():
        reason = f"not done {int(shard_timeout)} s after its first submission; last: {reason}"
    tally = f"after {attempt} attempts" + (f", {charged} without progress" if charged != attempt else "")
    return {**base, "ok": False, "reason": f"{reason} ({tally})", "attempts": attempt}
