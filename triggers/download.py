"""The download route: `GET /api/detections/{id}/files/{file}` serves a job's result file.

Under `mdbatch serve` results sit in a local folder, which a remote caller cannot open from a
`file://` link; the service serves them itself. The route is anonymous at the host (a v4 client
sends no key) and checks the link's own signature instead (triggers/links.py): it opens one file of
one caller's job, until the link expires. Azure deployments hand out SAS links to the blobs instead.
"""

from __future__ import annotations

import json
import logging

import azure.durable_functions as df
import azure.functions as func

from activities import services as sv
from adapters.errors import NotFoundError
from triggers import links, service

bp = df.Blueprint(http_auth_level=func.AuthLevel.ANONYMOUS)
log = logging.getLogger("mdbatch.download")


def _error(status: int, message: str) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"error": message}), status_code=status, mimetype="application/json")


@bp.route(route=links.FILES_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def detections_file(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    rid, file = req.route_params.get("id", ""), req.route_params.get("name", "")
    try:
        svc = sv.get()
        check = links.LinkCheck(rid=rid, file=file, caller=req.params.get("caller") or "",
                                expires=req.params.get("se") or "", sig=req.params.get("sig") or "")
        refused = links.verify(svc, check)
        if refused is not None:
            return _error(*refused)
        d = await service.durable_status(client, rid)
        files = links.output_files((d or {}).get("output"))
        if d is None or files is None or (d.get("input") or {}).get("caller") != check.caller:
            return _error(404, f"no result files for request {rid!r}")
        name = next((n for n in files.values() if n.rsplit("/", 1)[-1] == file), None)
        if name is None:
            return _error(404, f"request {rid!r} has no file {file!r}")
        try:
            body = svc.output.read_bytes(name)
        except NotFoundError:
            return _error(404, f"the file {file!r} of request {rid!r} is gone from the output")
    except Exception as exc:  # never leak details; the log is redacted
        log.exception("download failed: %s", exc.__class__.__name__)
        return _error(500, "internal error")
    return func.HttpResponse(body, status_code=200, mimetype="application/json",
                             headers={"Content-Disposition": f'attachment; filename="{file}"'})
