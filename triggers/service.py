"""What every door shares: validate a request, identify the caller, park secrets, start a job,
read a caller's status, cancel. HTTP-agnostic: errors are `ServiceError(status, message)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from activities import services as sv
from activities import steps
from adapters.errors import LocationError, NotFoundError
from adapters.secrets import park_url, unpark
from adapters.settings import Settings
from adapters.storage import check_caller_location, check_sas, parse_location, validate_input_location
from batch.request import MODEL_RE, DetectionRequest, RequestError, parse_request
from batch.signing import sign_spec
from batch.status import State, curated_status

log = logging.getLogger("mdbatch.triggers")
REQUEST_ID_RE = re.compile(r"^[a-z0-9-]{8,64}$")
TOP_ID_RE = re.compile(r"^(?:[0-9a-f]{32}|req-[0-9a-f]{32})$")  # not a group/shard sub-orchestration
ORCHESTRATOR = "detection_batch"
PRINCIPAL_HEADERS = ("x-ms-client-principal-name", "x-ms-client-principal-id")


class ServiceError(Exception):
    """An answer other than success: HTTP status + a message fit for the caller (no secrets)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Started:
    request_id: str
    existed: bool = False
    caller: str | None = None  # whom the job belongs to (the status link is scoped to it)


def supported_models(s: Settings) -> list[str]:
    """The model versions a request may name.

    Local compute scores with files on this machine, so only installed ones (NAME.onnx in the
    model folder) count, the default included. Azure ML resolves registered assets we cannot
    list here: the configured names plus the default.
    """
    if s.compute_backend == "local":
        folder = s.models_path
        installed = sorted(p.name[:-5] for p in folder.glob("*.onnx")) if folder.is_dir() else []
        return [n for n in s.models if n in installed] if s.models else installed
    names = list(s.models)
    if s.default_model not in names:
        names.append(s.default_model)
    return names


def supported_classifiers(s: Settings) -> list[str]:
    """The classifier versions a request may name (issue 12): installed ones
    (MODEL_DIR/classifiers/NAME.onnx) on local compute, the configured names on Azure ML."""
    if s.compute_backend == "local":
        folder = s.models_path / "classifiers"
        installed = sorted(p.name[:-5] for p in folder.glob("*.onnx")) if folder.is_dir() else []
        return [n for n in s.classifiers if n in installed] if s.classifiers else installed
    return list(s.classifiers)


def classification_fields(req: DetectionRequest) -> dict[str, Any]:
    """Issue 12: the job's classification keys; none for a request without a classifier, so such
    a job is exactly what it was before."""
    if not req.classifier_version:
        return {}
    return {"classifier": req.classifier_version, "country": req.country,
            "admin1_region": req.admin1_region, "ensemble": req.ensemble}


def identify(headers: Any, claimed: str | None, s: Settings) -> str:
    """The caller: the App Service authenticated principal, else `claimed` checked on the allowlist."""
    if s.app_service_auth:  # only the platform can set these headers then
        for h in PRINCIPAL_HEADERS:
            value = headers.get(h) if headers is not None else None
            if value:
                return f"aad:{value}"
    if s.callers:
        if not claimed:
            raise ServiceError(401, "a caller is required (field or query parameter 'caller')")
        if claimed not in s.callers:
            raise ServiceError(401, "caller is not on the allowlist")
    return claimed or "anonymous"


def caller_key(caller: str) -> str:
    return hashlib.sha256(caller.encode()).hexdigest()[:24]


def _check_locations(req: DetectionRequest | dict[str, Any], s: Settings, problems: list[str],
                     remote: bool) -> None:
    fields = req if isinstance(req, dict) else req.model_dump()
    input_sas, list_sas = fields.get("input_container_sas"), fields.get("images_requested_json_sas")
    if isinstance(input_sas, str) and input_sas:
        try:
            validate_input_location(input_sas, need_list=True, settings=s, check_remote=remote)
        except LocationError as exc:
            problems.append(f"input_container_sas: {exc}")
    if isinstance(list_sas, str) and list_sas:
        url = list_sas
        try:
            parent = url.split("?", 1)[0].rstrip("/").rpartition("/")[0]
            loc = check_caller_location(url, s)
            if loc.kind == "blob" and not loc.prefix:
                raise LocationError("malformed_url", "must name a JSON blob inside a container")
            parse_location(parent, s)
            if loc.sas:
                check_sas(loc.sas, need_read=True, need_list=False)
        except LocationError as exc:
            problems.append(f"images_requested_json_sas: {exc}")


def _raw_fields(body: bytes, s: Settings) -> dict[str, Any]:
    """The body's fields when it is a JSON object within the size limit, else {} (nothing to check)."""
    if len(body) > s.max_body_bytes:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(body: bytes, s: Settings, *, remote: bool = True) -> DetectionRequest:
    """Every problem of the request in one 400 message, before anything starts.

    A field error does not hide the others: locations, model and limits are checked on whatever
    fields have the right type, so one answer names everything that is wrong.
    """
    problems: list[str] = []
    req: DetectionRequest | None = None
    try:
        req = parse_request(body, max_bytes=s.max_body_bytes)
        fields: dict[str, Any] = req.model_dump()
    except RequestError as exc:
        problems.extend(exc.problems)
        fields = _raw_fields(body, s)
    _check_locations(fields, s, problems, remote=False)
    models = supported_models(s)
    available = ", ".join(models) or "none installed"
    model = fields.get("model_version")
    if isinstance(model, str) and MODEL_RE.match(model):
        if model not in models:
            problems.append(f"model_version {model!r} is not supported ({available})")
    elif model is None and s.default_model not in models:
        problems.append(f"no model_version given and the default model {s.default_model!r} "
                        f"is not installed ({available})")
    classifier = fields.get("classifier_version")  # issue 12
    if isinstance(classifier, str) and MODEL_RE.match(classifier):
        classifiers = supported_classifiers(s)
        if classifier not in classifiers:
            problems.append(f"classifier_version {classifier!r} is not supported "
                            f"({', '.join(classifiers) or 'none installed'})")
    first_n, sample_n = fields.get("first_n"), fields.get("sample_n")
    first_n = first_n if _is_int(first_n) and first_n > 0 else None
    sample_n = sample_n if _is_int(sample_n) and sample_n > 0 else None
    if first_n and first_n > s.max_images:
        problems.append(f"first_n must be at most {s.max_images}")
    if sample_n and sample_n > s.max_images:
        problems.append(f"sample_n must be at most {s.max_images}")
    if sample_n and first_n and sample_n > first_n:
        problems.append("sample_n must not be larger than first_n")
    if not problems and remote:  # one round trip to the caller's storage, once all else is right
        _check_locations(fields, s, problems, remote=True)
    if problems or req is None:
        raise ServiceError(400, "invalid request: " + "; ".join(problems or ["invalid request"]))
    return req


def options(s: Settings) -> dict[str, Any]:
    """The orchestration's knobs, fixed at start so replays see the same values."""
    return {
        "shard_size": s.shard_size, "window": s.max_in_flight, "group_size": s.group_size,
        "poll_initial_s": s.poll_initial_s, "poll_max_s": s.poll_max_s, "poll_factor": s.poll_factor,
        "max_attempts": s.max_attempts, "attempt_timeout_s": s.attempt_timeout_s,
        "checkpoint_every": s.checkpoint_every, "progress_interval_s": s.progress_interval_s,
        "activity_attempts": s.activity_attempts, "activity_retry_s": s.activity_retry_s,
        "max_total_attempts": s.max_total_attempts, "shard_timeout_s": s.shard_timeout_s,
        "stall_seconds": s.stall_seconds,
    }


async def active_jobs(client: Any) -> int:
    from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus as R

    statuses = await client.get_status_by(runtime_status=[R.Running, R.Pending])
    return sum(1 for st in statuses if TOP_ID_RE.match(st.instance_id or ""))


async def start(client: Any, body: bytes, headers: Any, *, request_id: str | None = None,
                trusted_caller: str | None = None, status_blob: str | None = None,
                metadata: dict[str, Any] | None = None) -> Started:
    """Validate, identify, check capacity, park secrets, start `detection_batch`."""
    svc = sv.get()
    s = svc.settings
    if request_id is not None:
        # A redelivered blob event finds its job before anything is checked again: the request
        # may no longer validate (SAS expired, input gone), and the job's outcome must stand.
        existing = await client.get_status(request_id)
        if existing is not None and getattr(existing, "runtime_status", None) is not None:
            return Started(request_id, existed=True)
    req = validate(body, s, remote=False)
    caller = trusted_caller or identify(headers, req.caller, s)
    remote_problems: list[str] = []
    _check_locations(req, s, remote_problems, remote=True)
    if not remote_problems:  # issue 14: the list exists, is readable, is a JSON array of entries
        from triggers.list_door import list_problems

        remote_problems.extend(list_problems(req.images_requested_json_sas, s, svc.secrets))
    if remote_problems:
        raise ServiceError(400, "invalid request: " + "; ".join(remote_problems))
    rid = request_id or uuid.uuid4().hex
    if await active_jobs(client) >= s.max_active_jobs:
        raise ServiceError(503, f"the service is at capacity ({s.max_active_jobs} active jobs); retry later")
    source = image_list = None
    try:
        if req.input_container_sas:
            url, ref = park_url(svc.secrets, rid, req.input_container_sas, "input")
            source = {"url": url, "secret_ref": ref}
        if req.images_requested_json_sas:
            url, ref = park_url(svc.secrets, rid, req.images_requested_json_sas, "list")
            image_list = {"url": url, "secret_ref": ref}
        job = {
            "request_id": rid, "caller": caller, "request_name": req.request_name,
            "model": req.model_version or s.default_model,
            **classification_fields(req),  # issue 12: none without a classifier
            "threshold": req.detection_threshold if req.detection_threshold is not None else 0.005,
            "source": source, "image_list": image_list, "use_url": req.use_url,
            "image_path_prefix": req.image_path_prefix, "first_n": req.first_n, "sample_n": req.sample_n,
            "status_blob": status_blob, "submitted": datetime.now(UTC).isoformat(),
            "metadata": metadata or None,  # issue 11: v4's country / organization_name, into `info`
            "options": options(s),
        }
        job = sign_spec(svc.service_key(), job)  # issue 14: plan acts only on specs our doors made
        svc.work.write_json(sv.index_name(caller_key(caller), rid),
                            {"request_id": rid, "created": job["submitted"],
                             "request_name": req.request_name})
        if status_blob:
            # Before the start, never after: a quick job writes its outcome there, and a "running"
            # written after start_new returned could overwrite it.
            from triggers.blobdoor import write_status

            write_status(status_blob, {"request_id": rid, "state": "running",
                                       "status_path": f"/api/detections/{rid}"})
        await client.start_new(ORCHESTRATOR, rid, job)
    except Exception:
        unpark(svc.secrets, rid)
        raise
    log.info("request %s started", rid)
    return Started(rid, caller=caller)


def _status_dict(st: Any) -> dict[str, Any]:
    d = st.to_json() if hasattr(st, "to_json") else dict(st)
    inp = d.get("input")
    if isinstance(inp, str):
        try:
            d["input"] = json.loads(inp)
        except ValueError:
            d["input"] = None
    out = d.get("output")
    if isinstance(out, str):
        with contextlib.suppress(ValueError):
            d["output"] = json.loads(out)
    return d


async def durable_status(client: Any, rid: str) -> dict[str, Any] | None:
    if not REQUEST_ID_RE.match(rid or "") or not TOP_ID_RE.match(rid):
        return None
    st = await client.get_status(rid, show_input=True)
    if st is None or getattr(st, "runtime_status", None) is None:
        return None
    return _status_dict(st)


async def owned_status(client: Any, rid: str, caller: str) -> dict[str, Any]:
    d = await durable_status(client, rid)
    if d is None or not isinstance(d.get("input"), dict) or d["input"].get("caller") != caller:
        raise ServiceError(404, f"no request {rid!r} for this caller")
    return d


async def list_jobs(client: Any, caller: str, state: str | None, limit: int = 100) -> list[dict[str, Any]]:
    svc = sv.get()
    prefix = f"_index/{caller_key(caller)}/"
    entries = []
    for name in svc.work.list(prefix=prefix):
        try:
            entries.append(json.loads(svc.work.read_bytes(name)))
        except (NotFoundError, ValueError):
            continue
    entries.sort(key=lambda e: e.get("created", ""), reverse=True)
    out = []
    for e in entries:
        d = await durable_status(client, e["request_id"])
        if d is None:
            continue
        cur = curated_status(d)
        if state and cur["state"] != state:
            continue
        out.append(cur)
        if len(out) >= limit:
            break
    return out


async def cancel(client: Any, rid: str, caller: str | None) -> dict[str, Any]:
    """Terminate the request, cancel its compute jobs, drop its secrets. Idempotent."""
    d = await (owned_status(client, rid, caller) if caller is not None else durable_status(client, rid))
    if d is None:
        raise ServiceError(404, f"no request {rid!r}")
    svc = sv.get()
    state = curated_status(d)["state"]
    if state in (State.COMPLETED, State.FAILED):
        return {"request_id": rid, "state": state, "message": f"the request already {state}"}
    svc.work.write_json(sv.cancel_marker_name(rid), {"canceled": True})
    if state != State.CANCELED:
        try:
            await client.terminate(rid, "canceled by the caller")
        except Exception as exc:  # already finished between our read and the terminate
            log.info("terminate %s: %s", rid, exc.__class__.__name__)
    # Groups (at most ~40) are terminated too; shard orchestrations end on their own: every job is
    # cancelled below and a new submit sees the cancel marker.
    try:
        plan = json.loads(svc.work.read_bytes(sv.plan_name(rid)))
    except NotFoundError:
        plan = {"shards": 0}
    from batch.fanout import plan_fanout

    opts = (d.get("input") or {}).get("options") or {}
    fan = plan_fanout(int(plan.get("shards", 0)), int(opts.get("window", 16)),
                      int(opts.get("group_size", 50)))
    for g in range(len(fan.groups)):
        with contextlib.suppress(Exception):
            await client.terminate(f"{rid}-g{g:04d}", "canceled")
    n = steps.cancel_request(svc, rid)
    _update_status_blob(d, "canceled")
    return {"request_id": rid, "state": State.CANCELED.value, "jobs_cancelled": n}


def _update_status_blob(d: dict[str, Any], state: str) -> None:
    inp = d.get("input") or {}
    name = inp.get("status_blob")
    if not name:
        return
    from triggers.blobdoor import write_status

    write_status(name, {"request_id": inp.get("request_id"), "state": state})
