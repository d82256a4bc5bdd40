"""HTTP doors: /api/detections (new) and /api/models; the v4 routes are in triggers/v4.py."""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from activities import services as sv
from batch.status import STATES, curated_status
from triggers import links, service, status_door
from triggers.service import ServiceError

bp = df.Blueprint(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("mdbatch.http")


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
        # issue 14: links scoped to this request and caller, never the task hub's system key
        return status_door.check_status_response(req, started.request_id, started.caller or "anonymous")
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
        # issue 11: result links are signed at each read, for the configured lifetime
        return _json(curated_status(d, links=links.fresh_links(d, req.url)))
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

# The v4-compatible routes live in triggers/v4.py (issue 11): anonymous at the host, own checks.
