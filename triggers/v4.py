"""The v4 "detector batch processing API" routes, for clients written against the old service.

`/api/v4/camera-trap/detection-batch/...`: request_detections, task/{id}, cancel_request,
supported_model_versions, default_model_version. An unchanged v4 client (CameraTraps
`prepare_api_submission.Task` driven by `manage_api_submission`) works against them:

- Authentication as v4 did it: the `caller` field checked against the allowlist (MDBATCH_CALLERS).
  A v4 client sends no key and cannot (a `?code=` in its base URL breaks its URL joining), so these
  routes are anonymous at the Functions host and check access here: an operator must configure the
  allowlist for them to answer, or the caller sends a function key (`x-functions-key` / `?code=`),
  checked against the keys the app can read (Settings.function_keys_path, secret `mdb-function-key`).
  Without either, every v4 route answers 401 with an {"error"} naming MDBATCH_CALLERS.
- v4's fields and lenient types, on these routes only: `country`, `organization_name` (kept as the
  job's metadata and written into the results' `info`), `use_url` "false"/"true", `first_n` "5",
  `sample_n` "5", `model_version` 5 (-> "5") or "" (the default), `request_name` "" (none). The
  request then goes through the same strict validation as `/api/detections`.
- v4's answers: hyphens in a task id are ignored, `Timestamp` is the last update, cancelling a job
  that already ended is a 400, errors are {"error": ...}.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from activities import services as sv
from adapters.errors import SecretNotFoundError
from adapters.settings import Settings
from batch.status import State, curated_status, v4_status
from triggers import links, service
from triggers.service import ServiceError

V4 = "v4/camera-trap/detection-batch"
bp = df.Blueprint(http_auth_level=func.AuthLevel.ANONYMOUS)
log = logging.getLogger("mdbatch.v4")
FUNCTION_KEY_SECRET = "mdb-function-key"
METADATA_FIELDS = ("country", "organization_name")
_FALSE = ("false", "f", "no", "n", "0", "")
_TRUE = ("true", "t", "yes", "y", "1")


def _json(obj: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(obj), status_code=status, mimetype="application/json")


async def _guard(fn: Callable[[], Awaitable[func.HttpResponse]]) -> func.HttpResponse:
    try:
        return await fn()
    except ServiceError as exc:
        return _json({"error": exc.message}, exc.status)
    except Exception as exc:  # never leak details (they may name a URL); the log is redacted
        log.exception("unexpected error: %s", exc.__class__.__name__)
        return _json({"error": "internal error"}, 500)


# --- access -------------------------------------------------------------------------------------

def _function_keys(s: Settings) -> list[str]:
    keys: list[str] = []
    try:
        data = json.loads(s.function_keys_path.read_text())
        if isinstance(data, dict):
            keys += [v for v in data.values() if isinstance(v, str) and v]
    except (OSError, ValueError):
        pass
    with contextlib.suppress(SecretNotFoundError):
        keys.append(sv.get().secrets.get(FUNCTION_KEY_SECRET))
    return keys


def _sent_key(req: func.HttpRequest) -> str | None:
    return req.headers.get("x-functions-key") or req.params.get("code") or None


def admit(req: func.HttpRequest, claimed: str | None, *, need_caller: bool) -> str | None:
    """The caller when the request may use the v4 routes, else ServiceError(401).

    A sent function key must be valid; with one, or with App Service authentication, the caller is
    identified as on /api/detections. Without a key the allowlist must be configured, and routes
    that act on a job (submit, cancel) need an allowlisted `caller`, as v4 did; the read-only
    routes (task status, model versions) then answer anyone, as v4's did.
    """
    s = sv.settings()
    key = _sent_key(req)
    if key is not None:
        if not any(hmac.compare_digest(key.encode(), k.encode()) for k in _function_keys(s)):
            raise ServiceError(401, "the function key is not valid for this service")
        return service.identify(req.headers, claimed, s)
    if s.app_service_auth and any(req.headers.get(h) for h in service.PRINCIPAL_HEADERS):
        return service.identify(req.headers, claimed, s)
    if not s.callers:
        raise ServiceError(401, "the v4 routes answer only allowlisted callers, and no allowlist is "
                                "configured: the operator must set MDBATCH_CALLERS (or send a function key)")
    if not need_caller:
        return None
    if not claimed or claimed not in s.callers:
        raise ServiceError(401, "parameter caller is missing or not on the allowlist (MDBATCH_CALLERS)")
    return claimed


# --- v4 fields and types -------------------------------------------------------------------------

def v4_request(data: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """v4's lenient body -> (the strict request's fields, metadata). Wrong types that v4 did not
    coerce are left for the strict validation to name."""
    if not isinstance(data, dict):
        raise ServiceError(400, "invalid request: body must be a JSON object")
    fields = dict(data)
    metadata: dict[str, str] = {}
    problems: list[str] = []
    for name in METADATA_FIELDS:
        value = fields.pop(name, None)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value) > 200:
            problems.append(f"{name}: must be a string of at most 200 characters")
        else:
            metadata[name] = value
    if fields.get("classifier_version") and metadata.get("country"):
        # v4 clients already send `country`: with a classifier it also geofences (issue 12)
        fields["country"] = metadata["country"]
    use_url = fields.get("use_url")
    if isinstance(use_url, str):
        low = use_url.strip().lower()
        if low in _FALSE:
            fields["use_url"] = False
        elif low in _TRUE:
            fields["use_url"] = True
    for name in ("first_n", "sample_n"):
        value = fields.get(name)
        if value is None or value == "" or value == 0:
            fields.pop(name, None)  # v4: `int(x) if x else None`
        elif isinstance(value, str) and value.strip().isdigit():
            fields[name] = int(value.strip())
    model = fields.get("model_version")
    if model == "" or model is None:
        fields.pop("model_version", None)  # v4: "" means the default model
    elif isinstance(model, (int, float)) and not isinstance(model, bool):
        fields["model_version"] = str(model)  # v4: str(model_version), "in case an int is specified"
    if fields.get("request_name") in ("", None):
        fields.pop("request_name", None)
    if problems:
        raise ServiceError(400, "invalid request: " + "; ".join(problems))
    return fields, metadata


def _body_json(req: func.HttpRequest) -> Any:
    ctype = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if not (ctype == "application/json" or ctype.endswith("+json")):
        raise ServiceError(415, "the body needs a JSON content type (application/json)")
    body = req.get_body() or b""
    limit = sv.settings().max_body_bytes
    if len(body) > limit:
        raise ServiceError(400, f"invalid request: request body is larger than {limit} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ServiceError(400, "invalid request: the body is not valid JSON") from None


async def _find(client: df.DurableOrchestrationClient, task_id: str) -> tuple[str, dict[str, Any] | None]:
    """The job by id as given, else with its hyphens removed (v4 stripped them: a uuid written with
    hyphens names the same task)."""
    d = await service.durable_status(client, task_id)
    if d is None and "-" in task_id:
        bare = task_id.replace("-", "")
        d = await service.durable_status(client, bare)
        if d is not None:
            return bare, d
    return task_id, d


def _stamp(iso: Any) -> str:
    """`2026-12-03T11:42:50.123456+00:00` -> `2026-12-03 11:42:50` (v4's time format, UTC)."""
    text = str(iso or "")
    return text[:19].replace("T", " ")


# --- routes ----------------------------------------------------------------------------------------

@bp.route(route=f"{V4}/request_detections", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def v4_request_detections(req: func.HttpRequest,
                                client: df.DurableOrchestrationClient) -> func.HttpResponse:
    async def go() -> func.HttpResponse:
        data = _body_json(req)
        if not isinstance(data, dict):
            raise ServiceError(400, "invalid request: body must be a JSON object")
        claimed = data.get("caller")
        caller = admit(req, claimed if isinstance(claimed, str) else None, need_caller=True)
        fields, metadata = v4_request(data)
        started = await service.start(client, json.dumps(fields).encode(), req.headers,
                                      trusted_caller=caller, metadata=metadata)
        return _json({"request_id": started.request_id})
    return await _guard(go)


@bp.route(route=f"{V4}/task/{{id}}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def v4_task(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """v4 asked no caller here: the unguessable id is the key. A signed-in principal, or a caller
    that names itself, is scoped (issue 14: B naming itself never reads A's job)."""
    async def go() -> func.HttpResponse:
        named = req.params.get("caller")
        caller = admit(req, named, need_caller=False)
        rid, d = await _find(client, req.route_params.get("id", ""))
        signed_in = any(req.headers.get(h) for h in service.PRINCIPAL_HEADERS)
        if d is not None and (signed_in or named):
            caller = caller or named
            d = d if (d.get("input") or {}).get("caller") == caller else None
        if d is None:
            raise ServiceError(404, f"task {rid!r} is not found")
        status = v4_status(d, links=links.fresh_links(d, req.url))
        updated = _stamp(d.get("lastUpdatedTime") or d.get("createdTime"))
        status["time"] = updated
        return _json({"Status": status, "Endpoint": f"/{V4}/request_detections", "TaskId": rid,
                      "Timestamp": updated})
    return await _guard(go)


@bp.route(route=f"{V4}/cancel_request", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def v4_cancel_request(req: func.HttpRequest,
                            client: df.DurableOrchestrationClient) -> func.HttpResponse:
    async def go() -> func.HttpResponse:
        data = _body_json(req)
        rid_given = data.get("request_id") if isinstance(data, dict) else None
        if not isinstance(rid_given, str) or not rid_given:
            raise ServiceError(400, "request_id is a required field")
        claimed = data.get("caller")
        caller = admit(req, claimed if isinstance(claimed, str) else None, need_caller=True)
        rid, d = await _find(client, rid_given)
        if d is None or (d.get("input") or {}).get("caller") != caller:
            raise ServiceError(404, f"task {rid!r} is not found for this caller")
        state = curated_status(d)["state"]
        if state not in (State.QUEUED, State.RUNNING):  # v4: only running (or problem) tasks cancel
            raise ServiceError(400, f"task {rid!r} has {state} and cannot be canceled")
        out = await service.cancel(client, rid, caller)
        return _json({"request_id": rid, "message": f"request {out['state']}: cancel signal sent; "
                                                     "the task endpoint shows its status"})
    return await _guard(go)


@bp.route(route=f"{V4}/supported_model_versions", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def v4_supported_model_versions(req: func.HttpRequest) -> func.HttpResponse:
    async def go() -> func.HttpResponse:
        admit(req, req.params.get("caller"), need_caller=False)
        return _json(sorted(service.supported_models(sv.settings())))
    return await _guard(go)


@bp.route(route=f"{V4}/default_model_version", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def v4_default_model_version(req: func.HttpRequest) -> func.HttpResponse:
    async def go() -> func.HttpResponse:
        admit(req, req.params.get("caller"), need_caller=False)
        return _json(sv.settings().default_model)
    return await _guard(go)
