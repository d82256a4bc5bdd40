"""The status URL a caller gets: scoped to one request and its caller, never the task hub's key.

`create_check_status_response` would hand out the Durable extension's system key (valid for every
instance of the task hub: list, read inputs, start, terminate, purge). Instead the 202 answer of a
submit points at routes of ours:

- `statusQueryGetUri` (and `Location`): `GET /api/detections/{id}/durable-status?sig=TOKEN`, where
  TOKEN is an HMAC of (request id, caller, expiry) with the service key (`batch.signing`); it
  answers in the Durable status shape for that one request and opens nothing else;
- `terminatePostUri`: our caller-scoped cancel (`POST /api/detections/{id}/cancel?caller=...`,
  function key required as for every route);
- no `sendEventPostUri`, `purgeHistoryDeleteUri`, `rewindPostUri`, `restartPostUri`,
  `suspendPostUri`, `resumePostUri`: the job takes no events and its history is not the caller's.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import quote, urlsplit

import azure.durable_functions as df
import azure.functions as func

from activities import services as sv
from batch.signing import SignatureError, StatusGrant, check_status_token, status_token
from triggers import links, service

bp = df.Blueprint()
log = logging.getLogger("mdbatch.status")
ROUTE = "detections/{id}/durable-status"
RUNNING = ("Pending", "Running", "Suspended", "ContinuedAsNew")
# what a caller sees of the job spec: its own request, without secret references, signature or knobs
INPUT_FIELDS = ("request_id", "request_name", "caller", "model", "threshold", "use_url",
                "image_path_prefix", "first_n", "sample_n", "submitted")


def api_base(req_url: str) -> str:
    """`https://HOST/api` from the URL of a request to one of our routes (`.../api/detections...`)."""
    parts = urlsplit(req_url)
    path = parts.path
    cut = path.find("/detections")
    if cut < 0:
        cut = path.find("/v4/")
    prefix = path[:cut] if cut >= 0 else "/api"
    return f"{parts.scheme}://{parts.netloc}{prefix}"


def status_url(base: str, rid: str, caller: str, *, key: bytes, days: float, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + days * 86400)
    token = status_token(key, StatusGrant(rid, caller, expires))
    return f"{base}/detections/{quote(rid)}/durable-status?sig={quote(token)}"


def check_status_payload(req_url: str, rid: str, caller: str) -> dict[str, str]:
    """The management payload of a submit, every link scoped to this request and caller."""
    svc = sv.get()
    base = api_base(req_url)
    return {
        "id": rid,
        "statusQueryGetUri": status_url(base, rid, caller, key=svc.service_key(),
                                        days=svc.settings.status_link_days),
        "terminatePostUri": f"{base}/detections/{quote(rid)}/cancel?caller={quote(caller, safe='')}",
    }


def check_status_response(req: func.HttpRequest, rid: str, caller: str) -> func.HttpResponse:
    """202 + Location, as `create_check_status_response` answers, without the task hub's key."""
    payload = check_status_payload(req.url, rid, caller)
    return func.HttpResponse(json.dumps(payload), status_code=202, mimetype="application/json",
                             headers={"Location": payload["statusQueryGetUri"], "Retry-After": "10"})


def durable_shape(d: dict[str, Any]) -> dict[str, Any]:
    """The Durable status shape with the input curated (no secret references, signature, options)."""
    inp = d.get("input") if isinstance(d.get("input"), dict) else {}
    curated: dict[str, Any] = {k: inp.get(k) for k in INPUT_FIELDS if k in inp}
    for k, kind in (("source", "input_container"), ("image_list", "images_requested_json")):
        ref = inp.get(k)
        if isinstance(ref, dict) and ref.get("url"):
            curated[kind] = ref["url"]  # the location without its SAS, as parked
    return {
        "name": d.get("name"), "instanceId": d.get("instanceId"), "runtimeStatus": d.get("runtimeStatus"),
        "input": curated, "customStatus": d.get("customStatus"), "output": d.get("output"),
        "createdTime": d.get("createdTime"), "lastUpdatedTime": d.get("lastUpdatedTime"),
    }


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers=headers)


async def scoped_status(client: Any, rid: str, token: str | None,
                        req_url: str = "") -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for a status link: the Durable shape when the token opens this request."""
    missing = (404, {"error": f"no request {rid!r} for this status link"})
    if not token:
        return missing
    d = await service.durable_status(client, rid)
    inp = d.get("input") if d else None
    if not isinstance(inp, dict) or not isinstance(inp.get("caller"), str):
        return missing
    try:
        check_status_token(sv.get().service_key(), token, rid, inp["caller"], time.time())
    except SignatureError as exc:
        if "expired" in str(exc):
            return 403, {"error": "this status link has expired; GET /api/detections/{id} with your key "
                                  "shows the status"}
        return missing
    body = durable_shape(d)
    fresh = links.fresh_links(d, req_url) if req_url else None
    if fresh is not None and isinstance(body["output"], dict):  # links signed now (issue 11)
        body["output"] = {**body["output"], "output_file_urls": fresh}
    return (202 if body["runtimeStatus"] in RUNNING else 200), body


@bp.route(route=ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def detections_durable_status(req: func.HttpRequest,
                                    client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Anonymous at the host: the signed token is the credential, and it opens one request only."""
    rid = req.route_params.get("id", "")
    try:
        status, body = await scoped_status(client, rid, req.params.get("sig"), req.url)
    except Exception as exc:  # never leak details; the log is redacted
        log.exception("status link: %s", exc.__class__.__name__)
        return _answer(500, {"error": "internal error"})
    headers = {"Location": req.url, "Retry-After": "10"} if status == 202 else None
    return _answer(status, body, headers)
