"""Benchmark app: fan-out of no-op activities, flat or grouped under sub-orchestrations."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="start/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    iid = await client.start_new(req.route_params["name"], None, req.get_json())
    return client.create_check_status_response(req, iid)


@app.activity_trigger(input_name="i")
def noop(i: int) -> int:
    return i


@app.orchestration_trigger(context_name="context")
def flat(context: df.DurableOrchestrationContext):
    n = context.get_input()["n"]
    results = yield context.task_all([context.call_activity("noop", i) for i in range(n)])
    return len(results)


@app.orchestration_trigger(context_name="context")
def group(context: df.DurableOrchestrationContext):
    lo, hi = context.get_input()
    results = yield context.task_all([context.call_activity("noop", i) for i in range(lo, hi)])
    return len(results)


@app.orchestration_trigger(context_name="context")
def grouped(context: df.DurableOrchestrationContext):
    inp = context.get_input()
    n, size = inp["n"], inp["group"]
    counts = yield context.task_all(
        [context.call_sub_orchestrator("group", [lo, min(n, lo + size)]) for lo in range(0, n, size)]
    )
    return sum(counts)
