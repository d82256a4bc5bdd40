"""HTTP doors: /api/detections (new), /api/models, and the v4-compatible routes of the old service."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from activities import services as sv
from batch.status import STATES, curated_status, v4_status
from triggers import service
from triggers.service import ServiceError

bp = df.Blueprint(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("mdbatch.http")
V4 = "v4/camera-trap/detection-batch"


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(obj), status_code=status, mimetype="application/json",
                             headers=headers)


def _error(exc: ServiceError, key: str = "error") -> func.HttpResponse:
    return _json({key: exc.message}, exc.status)


def _body(req: func.HttpRequest) -> bytes:
    """The JSON body, refusing a wrong content type (415) or an oversized body (413 -> 400 text)."""
    ctype = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype and not (ctype == "application/json" or ctype.endswith("+json")):
        raise ServiceError(415, f"content type must be application/json, not {ctype!r}")
    body = req.get_body() or b""
    limit = sv.settings().max_body_bytes
    if len(body) > limit:
        raise ServiceError(400, f"invalid request: request body is larger than {limit} bytes")
    return body


def _caller(req: func.HttpRequest, claimed: str | None = None) -> str:
    return service.identify(req.headers, claimed or req.params.get("caller"), sv.settings())


async def _guard(fn: Any, key: str = "error") -> func.HttpResponse:
    try:
        return await fn()
    except ServiceError as exc:
        return _error(exc, key)
    except Exception as exc:  # never leak details (they may name a URL); the log is redacted
        log.exception("unexpected error: %s", exc.__class__.__name__)
        return _json({key: "internal error"}, 500)


# --- the new API ---------------------------------------------------------------------------

@bp.route(route="detections", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def detections_submit(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    async def go() -> func.HttpResponse:
        started = await service.start(client, _body(req), req.headers)
        resp = client.create_check_status_response(req, started.request_id)
        return resp
    return await _guard(go)


@bp.route(route="detections", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def detections_list(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    async def go() -> func.HttpResponse:
        state = req.params.get("state")
        if state and state not in STATES:
            raise ServiceError(400, f"state must be one of {', '.join(STATES)}")
        try:
            limit = max(1, min(1000, int(req.params.get("limit", "100"))))
        except ValueError:
            raise ServiceError(400, "limit must be an integer") from None
        jobs = await service.list_jobs(client, _caller(req), state, limit)
        return _json({"jobs": jobs})
    return await _guard(go)


@bp.route(route="detections/{id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def detections_status(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    async def go() -> func.HttpResponse:
        d = await service.owned_status(client, req.route_params.get("id", ""), _caller(req))
        return _json(curated_status(d))
    return await _guard(go)


@bp.route(route="detections/{id}/cancel", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def detections_cancel(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    async def go() -> func.HttpResponse:
        claimed = None
        body = req.get_body()
        if body:
            try:
                claimed = (json.loads(body) or {}).get("caller")
            except (ValueError, AttributeError):
                raise ServiceError(400, "the body must be a JSON object") from None
        out = await service.cancel(client, req.route_params.get("id", ""), _caller(req, claimed))
        return _json(out, 202 if out["state"] == "canceled" else 200)
    return await _guard(go)


@bp.route(route="models", methods=["GET"])
async def models(req: func.HttpRequest) -> func.HttpResponse:
    s = sv.settings()
    return _json({"models": service.supported_models(s), "default": s.default_model,
                  "classifiers": service.supported_classifiers(s)})  # issue 12


# --- v4-compatible routes -------------------------------------------------------------------

@bp.route(route=f"{V4}/request_detections", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def v4_request_detections(req: func.HttpRequest,
                                client: df.DurableOrchestrationClient) -> func.HttpResponse:
    async def go() -> func.HttpResponse:
        started = await service.start(client, _body(req), req.headers)
        return _json({"request_id": started.request_id})
    return await _guard(go)


@bp.route(route=f"{V4}/task/{{id}}", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def v4_task(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Old clients send no caller: the unguessable id is the key; an authenticated caller is scoped."""
    async def go() -> func.HttpResponse:
        rid = req.route_params.get("id", "")
        if any(req.headers.get(h) for h in service.PRINCIPAL_HEADERS):
            d = await service.owned_status(client, rid, _caller(req))
        else:
            d = await service.durable_status(client, rid)
        if d is None:
            raise ServiceError(404, f"no task {rid!r}")
        created = d.get("createdTime") or datetime.now(UTC).isoformat()
        return _json({"Status": v4_status(d), "Endpoint": f"/{V4}/request_detections", "TaskId": rid,
                      "Timestamp": created})
    return await _guard(go)


@bp.route(route=f"{V4}/cancel_request", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def v4_cancel_request(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    async def go() -> func.HttpResponse:
        try:
            data = json.loads(_body(req) or b"null")
        except ValueError:
            raise ServiceError(400, "the body is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("request_id"), str):
            raise ServiceError(400, "request_id is required")
        out = await service.cancel(client, data["request_id"], _caller(req, data.get("caller")))
        return _json({"request_id": out["request_id"], "message": f"request {out['state']}"})
    return await _guard(go)


@bp.route(route=f"{V4}/supported_model_versions", methods=["GET"])
async def v4_supported_model_versions(req: func.HttpRequest) -> func.HttpResponse:
    return _json(service.supported_models(sv.settings()))


@bp.route(route=f"{V4}/default_model_version", methods=["GET"])
async def v4_default_model_version(req: func.HttpRequest) -> func.HttpResponse:
    return _json(sv.settings().default_model)
