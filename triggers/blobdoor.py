"""The blob-upload door: a request JSON dropped into the requests container starts a job once per
blob version. The instance id is derived from the blob name and its ETag, so a redelivered event
(or a restarted host) finds the same instance instead of starting a second one. The door writes
NAME.status.json beside the request; the orchestration updates it with the outcome.
"""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import azure.durable_functions as df
import azure.functions as func

from activities import services as sv
from triggers import service
from triggers.service import ServiceError

log = logging.getLogger("mdbatch.blobdoor")
STATUS_SUFFIX = ".status.json"
_settings = sv.settings()  # binding paths are fixed when the app is indexed
bp = df.Blueprint()


def request_id_for(name: str, etag: str) -> str:
    """`req-` + sha256(name + etag)[:32] (docs/contracts.md)."""
    return "req-" + hashlib.sha256((name + etag).encode()).hexdigest()[:32]


def requests_store() -> Any:
    """The requests container, opened with the blob trigger's own connection."""
    from adapters.storage import BlobStore, LocalStore, parse_connection_string
    from adapters.storage.locations import Location

    s = sv.settings()
    # The binding's connection names an app setting (the Functions convention); its value is the
    # host's business, read here only to write the status file beside the request.
    value = os.environ.get(s.requests_connection, "")
    container = s.requests_container
    if value.startswith("file://") or value.startswith("/"):
        root = Path(unquote(urlsplit(value).path)) if value.startswith("file://") else Path(value)
        return LocalStore(root / container)
    if value:
        info = parse_connection_string(value)
        loc = Location(kind="blob", url=f"{info.blob_endpoint}/{container}",
                       account_url=info.blob_endpoint, account_name=info.account_name,
                       container=container, emulator=info.blob_endpoint.startswith("http://"))
        return BlobStore(loc, account_key=info.account_key)
    uri = os.environ.get(f"{s.requests_connection}__blobServiceUri")
    if not uri:
        account = os.environ.get(f"{s.requests_connection}__accountName", "")
        uri = f"https://{account}.blob.core.windows.net"
    from azure.identity import DefaultAzureCredential

    loc = Location(kind="blob", url=f"{uri.rstrip('/')}/{container}", account_url=uri.rstrip("/"),
                   account_name=urlsplit(uri).hostname.split(".")[0] if urlsplit(uri).hostname else None,
                   container=container)
    return BlobStore(loc, token_credential=DefaultAzureCredential())


def write_status(name: str, status: dict[str, Any]) -> None:
    """Write (or overwrite) NAME.status.json beside the request blob `name`."""
    try:
        requests_store().write_json(name, {**status, "updated": datetime.now(UTC).isoformat()})
    except Exception as exc:  # the status file is a courtesy; never fail the job over it
        log.warning("could not write %s: %s", name, exc.__class__.__name__)


def _relative(blob_name: str, container: str) -> str:
    return blob_name[len(container) + 1:] if blob_name.startswith(container + "/") else blob_name


@bp.blob_trigger(arg_name="blob", path=f"{_settings.requests_container}/{{name}}",
                 connection=_settings.requests_connection, source=func.BlobSource.EVENT_GRID)
@bp.durable_client_input(client_name="client")
async def request_upload(blob: func.InputStream, client: df.DurableOrchestrationClient) -> None:
    s = sv.settings()
    name = _relative(blob.name or "", s.requests_container)
    if not name or name.endswith(STATUS_SUFFIX) or not name.lower().endswith(".json"):
        return  # our own status files, and anything that is not a request
    body = blob.read()
    props = blob.blob_properties or {}
    etag = str(props.get("ETag") or props.get("Etag") or props.get("etag") or "").strip('"')
    if not etag:
        etag = "sha256:" + hashlib.sha256(body).hexdigest()
    rid = request_id_for(name, etag)
    status_name = name + STATUS_SUFFIX
    try:
        from batch.request import parse_request

        try:
            claimed = parse_request(body, max_bytes=s.max_body_bytes).caller
        except Exception:
            claimed = None  # `start` reports the problems
        # A named caller is checked against the allowlist like any other door's (`start` ->
        # `identify`); a request blob without one belongs to "blob-upload".
        trusted = None if claimed else "blob-upload"
        # `start` writes the "running" status before it starts the job (a quick job may finish
        # and write its outcome before `start` returns); the orchestration writes the outcome.
        await service.start(client, body, None, request_id=rid,
                            trusted_caller=trusted, status_blob=status_name)
    except ServiceError as exc:
        write_status(status_name, {"request_id": None, "state": "rejected", "error": exc.message})
        log.info("request blob %s rejected (%d)", name, exc.status)
