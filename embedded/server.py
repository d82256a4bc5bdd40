"""HTTP: the app's HTTP-triggered functions, the Durable management webhooks and the client RPC routes."""

from __future__ import annotations

import asyncio
import base64
import hmac
import inspect
import json
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import quote, unquote

import azure.functions as func
from aiohttp import web

from .appmodel import HttpRoute
from .engine import Engine
from .protocol import fmt_ts, parse_ts
from .records import EngineError
from .store import TERMINAL, InstanceRow

log = logging.getLogger("embedded")

WEBHOOK = "runtime/webhooks/durabletask"
RUNTIME_STATUSES = {
    "Pending",
    "Running",
    "Completed",
    "ContinuedAsNew",
    "Failed",
    "Terminated",
    "Suspended",
    "Canceled",
}


def _json(status: int, body: Any, headers: dict | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


def _err(status: int, message: str) -> web.Response:
    """The host's own errors: `error` as the app's doors answer (issue 11), plus the Functions
    host's `Message` / `ExceptionMessage` fields that Durable clients read."""
    return _json(status, {"error": message, "Message": message, "ExceptionMessage": message})


def _truthy(v: str | None, default: bool = False) -> bool:
    if v is None:
        return default
    return v.strip().lower() in ("1", "true", "yes")


class HttpFrontend:
    """aiohttp application bound to one host: routing, auth, function invocation, management API."""

    def __init__(
        self,
        engine: Engine,
        routes: list[HttpRoute],
        keys: dict[str, str] | None,
        hub: str,
        binding_kwargs: Callable[..., dict],
    ) -> None:
        self.engine = engine
        self.routes = routes
        self.keys = keys
        self.hub = hub
        self.binding_kwargs = binding_kwargs
        self.rpc_token = secrets.token_urlsafe(16)
        self.base_url = ""
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="embedded-http")
        self.app = web.Application(client_max_size=256 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)

    # ---------------------------------------------------------------- client binding
    def _sys_query(self) -> str:
        q = f"taskHub={quote(self.hub)}&connection=Storage"
        if self.keys:
            q += f"&code={quote(self.keys['durabletask'])}"
        return q

    def management_urls(self, instance_id: str) -> dict[str, str]:
        base = f"{self.base_url}/{WEBHOOK}/instances/{quote(instance_id, safe=':')}"
        q = self._sys_query()
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{base}?{q}",
            "sendEventPostUri": f"{base}/raiseEvent/{{eventName}}?{q}",
            "terminatePostUri": f"{base}/terminate?reason={{text}}&{q}",
            "rewindPostUri": f"{base}/rewind?reason={{text}}&{q}",
            "purgeHistoryDeleteUri": f"{base}?{q}",
            "restartPostUri": f"{base}/restart?{q}",
            "suspendPostUri": f"{base}/suspend?reason={{text}}&{q}",
            "resumePostUri": f"{base}/resume?reason={{text}}&{q}",
        }

    def client_json(self) -> str:
        """The durable client binding value the extension hands a function (what the SDK parses)."""
        q = self._sys_query()
        return json.dumps(
            {
                "taskHubName": self.hub,
                "creationUrls": {
                    "createNewInstancePostUri": f"{self.base_url}/{WEBHOOK}/orchestrators/{{functionName}}"
                    f"[/{{instanceId}}]?{q}",
                    "createAndWaitOnNewInstancePostUri": f"{self.base_url}/{WEBHOOK}/orchestrators/"
                    "{functionName}"
                    f"[/{{instanceId}}]?timeout={{timeoutInSeconds}}"
                    f"&pollingInterval={{intervalInSeconds}}&{q}",
                },
                "managementUrls": self.management_urls("INSTANCEID"),
                "baseUrl": f"{self.base_url}/{WEBHOOK}",
                "requiredQueryStringParameters": q,
                "rpcBaseUrl": f"{self.base_url}/_rpc/{self.rpc_token}/durabletask/",
                "httpBaseUrl": f"{self.base_url}/{WEBHOOK}",
            }
        )

    # ---------------------------------------------------------------- dispatch
    def _key_ok(self, request: web.Request, allowed: tuple[str, ...]) -> bool:
        if not self.keys:
            return True
        given = request.query.get("code") or request.headers.get("x-functions-key") or ""
        return any(hmac.compare_digest(given, self.keys[k]) for k in allowed if k in self.keys)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.lstrip("/")
        try:
            if (
                path.startswith(f"_rpc/{self.rpc_token}/durabletask/")
                or path == f"_rpc/{self.rpc_token}/durabletask"
            ):
                return await self.management(
                    request, path[len(f"_rpc/{self.rpc_token}/durabletask") :].strip("/")
                )
            if path == WEBHOOK or path.startswith(WEBHOOK + "/"):
                if not self._key_ok(request, ("durabletask", "master")):
                    return _err(401, "Unauthorized")
                return await self.management(request, path[len(WEBHOOK) :].strip("/"))
            if path == "admin/host/status":
                return _json(200, {"state": "Running"})
            return await self.function_route(request, path)
        except EngineError as e:
            return _err(e.status, str(e))
        except Exception as e:  # never let a bug kill the server
            log.exception("unhandled error serving %s %s", request.method, request.path)
            return _err(500, f"{type(e).__name__}: {e}")

    async def function_route(self, request: web.Request, path: str) -> web.StreamResponse:
        method_mismatch = False
        for route in self.routes:
            m = route.regex.match(path)
            if not m:
                continue
            if route.methods is not None and request.method.upper() not in route.methods:
                method_mismatch = True
                continue
            level = route.auth_level
            if level == "function" and not self._key_ok(request, ("function", "master")):
                return _err(401, "Unauthorized")
            if level in ("admin", "system") and not self._key_ok(request, ("master",)):
                return _err(401, "Unauthorized")
            params = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
            return await self.invoke_http(route, request, params)
        if method_mismatch:
            return _err(405, "Method Not Allowed")
        return _err(404, f"no function answers {request.method} /{path}")

    async def invoke_http(
        self, route: HttpRoute, request: web.Request, route_params: dict
    ) -> web.StreamResponse:
        fi = route.function
        body = await request.read()
        req = func.HttpRequest(
            method=request.method.upper(),
            url=str(request.url),
            headers={k: v for k, v in request.headers.items()},
            params={k: v for k, v in request.query.items()},
            route_params=route_params,
            body=body,
        )
        kwargs = self.binding_kwargs(fi, {fi.trigger["name"]: req}, fi.name)
        for p in fi.params:  # route parameters bound by name, as the worker does
            if p not in kwargs and p in route_params:
                kwargs[p] = route_params[p]
        if fi.is_async:
            result = await fi.func(**kwargs)
        else:
            result = await asyncio.get_running_loop().run_in_executor(self.pool, partial(fi.func, **kwargs))
            if inspect.isawaitable(result):
                result = await result
        return _to_response(result)

    # ---------------------------------------------------------------- management API
    async def _db(self, fn: Callable, *args: Any, **kw: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(fn, *args, **kw))

    async def management(self, request: web.Request, sub: str) -> web.StreamResponse:
        segs = [p for p in sub.split("/") if p != ""]
        method = request.method.upper()
        if not segs:
            return _err(404, "Not Found")
        if segs[0] == "orchestrators" and len(segs) in (2, 3):
            if method != "POST":
                return _err(405, "Method Not Allowed")
            return await self.start(request, segs[1], segs[2] if len(segs) == 3 else None)
        if segs[0] != "instances":
            return _err(404, "Not Found")
        if len(segs) == 1:
            if method == "GET":
                return await self.list_instances(request)
            if method == "DELETE":
                return await self.purge_many(request)
            return _err(405, "Method Not Allowed")
        iid = segs[1]
        if len(segs) == 2:
            if method == "GET":
                return await self.get_status(request, iid)
            if method == "DELETE":
                n = await self._db(self.engine.purge, iid)
                return (
                    _json(200, {"instancesDeleted": 1})
                    if n
                    else _err(404, f"No instance with ID '{iid}' found or it is still running.")
                )
            return _err(405, "Method Not Allowed")
        op = segs[2]
        if op == "raiseEvent" and len(segs) == 4:
            if method != "POST":
                return _err(405, "Method Not Allowed")
            return await self.raise_event(request, iid, segs[3])
        if op in ("terminate", "suspend", "resume") and len(segs) == 3:
            if method != "POST":
                return _err(405, "Method Not Allowed")
            reason = request.query.get("reason", "")
            code = await self._db(self.engine.send, iid, {"t": op, "reason": reason})
            if code == 202:
                return web.Response(status=202)
            return _err(
                code,
                f"No instance with ID '{iid}' found."
                if code == 404
                else f"Instance '{iid}' is already completed, failed or terminated.",
            )
        if op in ("rewind", "restart") and len(segs) == 3:
            if method != "POST":
                return _err(405, "Method Not Allowed")
            return _err(501, f"'{op}' is not supported by the embedded host")
        return _err(404, "Not Found")

    async def start(self, request: web.Request, name: str, instance_id: str | None) -> web.StreamResponse:
        text = (await request.read()).decode("utf-8", "replace").strip()
        input_json: str | None = None
        if text:
            try:
                value = json.loads(text)
            except ValueError:
                return _err(400, "The request content is not valid JSON.")
            # The Python SDK posts the JSON text of its input as a JSON string; a plain JSON body is
            # the input itself. Either way the orchestrator's payload "input" is this value.
            input_json = value if isinstance(value, str) else json.dumps(value)
        iid = await self._db(self.engine.start_instance, name, instance_id, input_json)
        payload = self.management_urls(iid)
        return _json(202, payload, headers={"Location": payload["statusQueryGetUri"], "Retry-After": "10"})

    async def get_status(self, request: web.Request, iid: str) -> web.StreamResponse:
        q = request.query
        st = await self._db(
            self.engine.status,
            iid,
            show_history=_truthy(q.get("showHistory")),
            show_history_output=_truthy(q.get("showHistoryOutput")),
            show_input=_truthy(q.get("showInput"), True),
        )
        if st is None:
            return _err(404, f"No instance with ID '{iid}' found.")
        status = st["runtimeStatus"]
        if status in ("Running", "Pending", "Suspended", "ContinuedAsNew"):
            loc = self.management_urls(iid)["statusQueryGetUri"]
            return _json(202, st, headers={"Location": loc, "Retry-After": "10"})
        if status == "Failed" and _truthy(q.get("returnInternalServerErrorOnFailure")):
            return _json(500, st)
        return _json(200, st)

    def _filters(self, q: Any) -> tuple[str, list[Any]]:
        where, args = [], []
        if q.get("createdTimeFrom"):
            where.append("created_time >= ?")
            args.append(fmt_ts(parse_ts(q["createdTimeFrom"])))
        if q.get("createdTimeTo"):
            where.append("created_time <= ?")
            args.append(fmt_ts(parse_ts(q["createdTimeTo"])))
        if q.get("runtimeStatus"):
            statuses = [s.strip() for s in q["runtimeStatus"].split(",") if s.strip()]
            bad = [s for s in statuses if s not in RUNTIME_STATUSES]
            if bad:
                raise EngineError(400, f"Unknown runtimeStatus value(s): {', '.join(bad)}")
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(statuses)
        if q.get("instanceIdPrefix"):
            where.append("instance_id >= ? AND instance_id < ?")
            p = q["instanceIdPrefix"]
            args.extend([p, p + "\U0010ffff"])
        return (" AND ".join(where) or "1=1"), args

    async def list_instances(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            where, args = self._filters(q)
            top = int(q.get("top") or 0) or None
            if top is not None and top < 0:
                raise ValueError
        except ValueError:
            return _err(
                400, "Invalid query parameter (time filters must be ISO 8601; top a positive integer)."
            )
        token = request.headers.get("x-ms-continuation-token")
        if token and token != "null":
            try:
                after = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
                where += " AND (created_time > ? OR (created_time = ? AND instance_id > ?))"
                args.extend([after[0], after[0], after[1]])
            except (ValueError, IndexError, TypeError):
                return _err(400, "Invalid continuation token.")
        limit = f" LIMIT {top + 1}" if top else ""
        rows = await self._db(
            self.engine.store.query,
            f"SELECT * FROM instances WHERE {where} ORDER BY created_time, instance_id{limit}",
            args,
        )
        rows = [InstanceRow(*r) for r in rows]
        headers = {}
        if top and len(rows) > top:
            rows = rows[:top]
            last = rows[-1]
            headers["x-ms-continuation-token"] = base64.urlsafe_b64encode(
                json.dumps([last.created_time, last.instance_id]).encode()
            ).decode()
        show_input = _truthy(q.get("showInput"))
        body = [self.engine.status_of(r, show_input=show_input) for r in rows]
        return _json(200, body, headers=headers)

    async def purge_many(self, request: web.Request) -> web.StreamResponse:
        try:
            where, args = self._filters(request.query)
        except ValueError:
            return _err(400, "Invalid query parameter.")
        if not request.query.get("createdTimeFrom"):
            return _err(400, "createdTimeFrom is required.")
        rows = await self._db(
            self.engine.store.query,
            f"SELECT instance_id FROM instances WHERE {where} AND status IN (?,?,?)",
            [*args, *TERMINAL],
        )
        n = 0
        for (iid,) in rows:
            n += await self._db(self.engine.purge, iid)
        return _json(200, {"instancesDeleted": n}) if n else _err(404, "No instances matched.")

    async def raise_event(self, request: web.Request, iid: str, name: str) -> web.StreamResponse:
        text = (await request.read()).decode("utf-8", "replace").strip()
        data: Any = None
        if text:
            try:
                data = json.loads(text)
            except ValueError:
                return _err(400, "Only application/json request content is supported")
        # The event's Input is the body's JSON value (the Python SDK client sends a JSON string of
        # its JSON, so the orchestrator then receives that string, exactly as in Azure).
        code = await self._db(self.engine.send, iid, {"t": "event", "name": name, "input": json.dumps(data)})
        if code == 202:
            return web.Response(status=202)
        return _err(
            code,
            f"No instance with ID '{iid}' found."
            if code == 404
            else f"Instance '{iid}' is completed, failed or terminated.",
        )


def _to_response(result: Any) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if isinstance(result, func.HttpResponse):
        headers = {k: v for k, v in result.headers.items()}
        ctype = headers.pop("Content-Type", None) or headers.pop("content-type", None)
        if not ctype:
            ctype = result.mimetype or "text/plain"
            if (result.charset and ctype.startswith("text/")) or ctype == "application/json":
                ctype += f"; charset={result.charset or 'utf-8'}"
        headers["Content-Type"] = ctype
        return web.Response(status=result.status_code, body=result.get_body() or b"", headers=headers)
    if result is None:
        return web.Response(status=204)
    if isinstance(result, bytes | bytearray):
        return web.Response(status=200, body=bytes(result), content_type="application/octet-stream")
    if isinstance(result, str):
        return web.Response(status=200, text=result, content_type="text/plain")
    return _json(200, result)
