"""Sample app for the embedded host's tests: every durable pattern the host must drive."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func
from sample_lib import counters  # the app's own package: the host must put the app dir on sys.path

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
bp = df.Blueprint()


# ---------------------------------------------------------------- HTTP doors
@app.route(route="orchestrators/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    payload = json.loads(body) if body else None
    iid = await client.start_new(req.route_params["name"], req.params.get("id"), payload)
    return client.create_check_status_response(req, iid)


@app.route(route="status/{iid}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    st = await client.get_status(req.route_params["iid"], show_input=True)
    if not st:
        return func.HttpResponse("not found", status_code=404)
    return func.HttpResponse(json.dumps(st.to_json()), mimetype="application/json")


@app.route(route="list", methods=["GET"])
@app.durable_client_input(client_name="client")
async def list_instances(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    statuses = req.params.get("status")
    if statuses:
        items = await client.get_status_by(
            runtime_status=[df.OrchestrationRuntimeStatus(s) for s in statuses.split(",")]
        )
    else:
        items = await client.get_status_all()
    return func.HttpResponse(json.dumps(sorted(s.instance_id for s in items)), mimetype="application/json")


@app.route(route="instances/{iid}/events/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def raise_event(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.raise_event(req.route_params["iid"], req.route_params["name"], req.get_json())
    return func.HttpResponse(status_code=202)


@app.route(route="instances/{iid}/terminate", methods=["POST"])
@app.durable_client_input(client_name="client")
async def terminate(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.terminate(req.route_params["iid"], req.params.get("reason", "stopped"))
    return func.HttpResponse(status_code=202)


@app.route(route="instances/{iid}", methods=["DELETE"])
@app.durable_client_input(client_name="client")
async def purge(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    res = await client.purge_instance_history(req.route_params["iid"])
    return func.HttpResponse(json.dumps({"deleted": res.instances_deleted}), mimetype="application/json")


@app.route(route="payload/{iid}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def payload(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(client.create_http_management_payload(req.route_params["iid"])),
        mimetype="application/json",
    )


@bp.route(route="echo/{a}/{n:int?}", methods=["GET", "PUT"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(
            {
                "method": req.method,
                "route": dict(req.route_params),
                "query": dict(req.params),
                "header": req.headers.get("x-test"),
                "body": req.get_body().decode(),
            }
        ),
        mimetype="application/json",
    )


@bp.route(route="secret", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def secret(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("ok")


@bp.route(route="setting", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def setting(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(os.environ.get(req.params["name"], ""))


# ---------------------------------------------------------------- activities
@app.activity_trigger(input_name="n")
def square(n: int) -> int:
    return n * n


@app.activity_trigger(input_name="n")
async def async_double(n: int) -> int:
    await asyncio.sleep(0)
    return n * 2


@app.activity_trigger(input_name="payload")
def flaky(payload: dict) -> str:
    """Fails until it has been called `fail_times` times for this key (counted in a file)."""
    n = counters.bump(payload["dir"], payload["key"])
    if n <= payload["fail_times"]:
        raise RuntimeError(f"flaky failure {n}")
    return f"ok after {n}"


@app.activity_trigger(input_name="payload")
def record(payload: dict) -> str:
    """Appends a line to a file: lets tests count how often an activity ran."""
    with open(Path(payload["dir"]) / "record.txt", "a", encoding="utf-8") as f:
        f.write(f"{payload['i']}\n")
    return f"r{payload['i']}"


@app.activity_trigger(input_name="payload")
def slow(payload: dict) -> int:
    import time

    time.sleep(payload.get("seconds", 0.05))
    return payload["i"]


@app.activity_trigger(input_name="x")
def boom(x: str) -> str:
    raise ValueError(f"boom {x}")


# ---------------------------------------------------------------- orchestrators
@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    n = context.get_input()["n"]
    tasks = [context.call_activity("square", i) for i in range(n)]
    tasks += [context.call_activity("async_double", i) for i in range(3)]
    context.set_custom_status({"phase": "fanning out", "n": n})
    results = yield context.task_all(tasks)
    return sum(results)


@app.orchestration_trigger(context_name="context")
def record_fan_out(context: df.DurableOrchestrationContext):
    inp = context.get_input()
    tasks = [
        context.call_activity("slow", {"i": i, "seconds": inp.get("seconds", 0.05)}) for i in range(inp["n"])
    ]
    results = yield context.task_all(tasks)
    return sorted(results) == list(range(inp["n"]))


@app.orchestration_trigger(context_name="context")
def monitor(context: df.DurableOrchestrationContext):
    """Polls on a durable timer until `polls` rounds passed; custom status shows progress."""
    inp = context.get_input()
    seen = []
    for i in range(inp["polls"]):
        context.set_custom_status({"round": i})
        seen.append((yield context.call_activity("square", i)))
        yield context.create_timer(context.current_utc_datetime + timedelta(minutes=5))
    return {"seen": seen, "uuid": context.new_uuid(), "now": context.current_utc_datetime.isoformat()}


@app.orchestration_trigger(context_name="context")
def retry_ok(context: df.DurableOrchestrationContext):
    inp = context.get_input()
    opts = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=inp["max"])
    a = yield context.call_activity_with_retry("flaky", opts, {**inp, "key": "a"})
    b = yield context.call_activity("square", 3)
    tasks = [context.call_activity_with_retry("flaky", opts, {**inp, "key": f"p{i}"}) for i in range(3)]
    tasks.append(context.call_activity("square", 4))
    par = yield context.task_all(tasks)
    return [a, b, par]


@app.orchestration_trigger(context_name="context")
def retry_exhaust(context: df.DurableOrchestrationContext):
    inp = context.get_input()
    opts = df.RetryOptions(first_retry_interval_in_milliseconds=500, max_number_of_attempts=inp["max"])
    try:
        yield context.call_activity_with_retry("flaky", opts, {**inp, "key": "x"})
        return "unexpected"
    except Exception as e:
        after = yield context.call_activity("square", 5)
        return {"caught": "flaky failure" in str(e), "after": after}


@app.orchestration_trigger(context_name="context")
def child_ok(context: df.DurableOrchestrationContext):
    n = context.get_input()
    results = yield context.task_all([context.call_activity("square", i) for i in range(n)])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def child_fail(context: df.DurableOrchestrationContext):
    yield context.call_activity("boom", context.get_input())
    return "never"


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    ok = yield context.call_sub_orchestrator("child_ok", 4)
    many = yield context.task_all([context.call_sub_orchestrator("child_ok", k) for k in range(1, 4)])
    try:
        yield context.call_sub_orchestrator("child_fail", "kid")
        caught = None
    except Exception as e:
        caught = str(e)
    opts = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=2)
    try:
        yield context.call_sub_orchestrator_with_retry("child_fail", opts, "again")
        caught_retry = None
    except Exception as e:
        caught_retry = str(e)
    return {"ok": ok, "many": many, "caught": caught, "caught_retry": caught_retry}


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    """External event vs timeout: whichever comes first."""
    timeout = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    event = context.wait_for_external_event("approve")
    winner = yield context.task_any([event, timeout])
    if winner == event:
        timeout.cancel()
        return {"result": "approved", "data": event.result}
    return {"result": "timed out"}


@app.orchestration_trigger(context_name="context")
def two_events(context: df.DurableOrchestrationContext):
    """Both events may arrive before the orchestration waits for them (they must be buffered)."""
    yield context.call_activity("square", 1)
    a = yield context.wait_for_external_event("a")
    b = yield context.wait_for_external_event("b")
    a2 = yield context.wait_for_external_event("a")
    return [a, b, a2]


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    n = context.get_input() or 0
    yield context.call_activity("square", n)
    if n < 4:
        context.continue_as_new(n + 1)
        return None
    return n


@app.orchestration_trigger(context_name="context")
def long_parent(context: df.DurableOrchestrationContext):
    """Waits a long time in a child: terminate must cascade."""
    yield context.call_sub_orchestrator("long_child", None, context.instance_id + "-child")
    return "never"


@app.orchestration_trigger(context_name="context")
def long_child(context: df.DurableOrchestrationContext):
    yield context.create_timer(context.current_utc_datetime + timedelta(days=1))
    return "never"


@app.orchestration_trigger(context_name="context")
def crashy(context: df.DurableOrchestrationContext):
    yield context.call_activity("square", 2)
    raise ValueError("orchestrator exploded")


# ---------------------------------------------------------------- blob trigger
@app.blob_trigger(arg_name="blob", path="inbox/{name}", connection="SAMPLE_BLOBS")
@app.durable_client_input(client_name="client")
async def on_blob(blob: func.InputStream, client: df.DurableOrchestrationClient) -> None:
    data = json.loads(blob.read())
    await client.start_new("child_ok", "blob-" + blob.name.split("/")[-1].split(".")[0], data["n"])


app.register_functions(bp)


@app.orchestration_trigger(context_name="context")
def crash_fan_out(context: df.DurableOrchestrationContext):
    """Fan-out used by the crash-recovery test: every result must come back exactly once."""
    inp = context.get_input()
    context.set_custom_status("working")
    results = yield context.task_all(
        [context.call_activity("slow", {"i": i, "seconds": inp["seconds"]}) for i in range(inp["n"])]
    )
    total = yield context.call_sub_orchestrator("child_ok", 3)
    return {"results": results, "child": total}
