"""Activity triggers: each unpacks its small input, calls `activities.steps`, returns a small dict.

Parameters and returns are annotated with the plain type `dict`: the Functions Python worker refuses
a generic alias such as `dict[str, Any]` on a binding ("invalid non-type annotation") and then fails
the whole app's metadata, so the host runs nothing.
"""

from __future__ import annotations

import azure.durable_functions as df

from activities import services, steps

bp = df.Blueprint()


@bp.activity_trigger(input_name="job")
def plan_shards(job: dict) -> dict:
    """A request that cannot be served as asked is an answer, not an error: no retry would help."""
    try:
        return steps.plan(services.get(), job)
    except steps.RequestProblem as exc:
        return {"problem": str(exc)}


@bp.activity_trigger(input_name="arg")
def submit_shard(arg: dict) -> dict:
    return steps.submit(services.get(), arg)


@bp.activity_trigger(input_name="arg")
def poll_shard(arg: dict) -> dict:
    return steps.poll(services.get(), arg)


@bp.activity_trigger(input_name="arg")
def cancel_shard(arg: dict) -> dict:
    return steps.cancel_job(services.get(), arg)


@bp.activity_trigger(input_name="arg")
def progress(arg: dict) -> dict:
    """Live progress of the running shard groups (read-only; small in, small out)."""
    return steps.progress(services.get(), arg)


@bp.activity_trigger(input_name="arg")
def aggregate_results(arg: dict) -> dict:
    return steps.aggregate(services.get(), arg)


@bp.activity_trigger(input_name="arg")
def publish_results(arg: dict) -> dict:
    return steps.publish(services.get(), arg)


@bp.activity_trigger(input_name="arg")
def cleanup_request(arg: dict) -> dict:
    return steps.cleanup(services.get(), arg)


@bp.activity_trigger(input_name="arg")
def report_request_status(arg: dict) -> dict:
    """Update NAME.status.json beside a blob-uploaded request with the outcome."""
    from triggers.blobdoor import write_status

    write_status(arg["name"], arg["status"])
    return {}
