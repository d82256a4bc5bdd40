"""Azure Blob Storage (and Azurite) as a Store, plus how credentials are chosen for a location."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobSasPermissions, ContainerClient, generate_blob_sas

from .. import clock
from ..errors import AdapterError, AlreadyExistsError, LocationError, NotFoundError
from .base import check_name, check_prefix, json_bytes, normalize_extensions
from .locations import Location

USER_DELEGATION_MAX = timedelta(days=7)  # Get User Delegation Key: expiry within 7 days of now
PAGE_SIZE = 5000  # the service maximum: fewest round trips, bounded memory (one page at a time)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    # The public, documented Azurite development key (not a secret).
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass(frozen=True)
class ConnectionInfo:
    """The parts of a storage connection string that matter here."""

    account_name: str
    account_key: str | None
    blob_endpoint: str


def parse_connection_string(conn: str) -> ConnectionInfo:
    """Parse a storage connection string (incl. UseDevelopmentStorage=true)."""
    parts: dict[str, str] = {}
    for item in conn.split(";"):
        if "=" in item:
            k, v = item.split("=", 1)
            parts[k.strip().lower()] = v.strip()
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        return ConnectionInfo(AZURITE_ACCOUNT, AZURITE_KEY, f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}")
    name = parts.get("accountname")
    if not name:
        raise AdapterError("the storage connection string has no AccountName")
    endpoint = parts.get("blobendpoint")
    if not endpoint:
        protocol = parts.get("defaultendpointsprotocol", "https")
        suffix = parts.get("endpointsuffix", "core.windows.net")
        endpoint = f"{protocol}://{name}.blob.{suffix}"
    return ConnectionInfo(name, parts.get("accountkey"), endpoint.rstrip("/"))


def _same_endpoint(a: str, b: str) -> bool:
    pa, pb = urlsplit(a.rstrip("/")), urlsplit(b.rstrip("/"))
    norm = {"localhost": "127.0.0.1"}
    ha, hb = norm.get(pa.hostname or "", pa.hostname), norm.get(pb.hostname or "", pb.hostname)
    return (pa.scheme, ha, pa.port, pa.path) == (pb.scheme, hb, pb.port, pb.path)


def account_key_for(location: Location, connection_string: str | None) -> str | None:
    """The account key from a connection string whose endpoint is this location's account."""
    if not connection_string or location.account_url is None:
        return None
    info = parse_connection_string(connection_string)
    if info.account_key and _same_endpoint(info.blob_endpoint, location.account_url):
        return info.account_key
    return None


class BlobStore:
    """One container (+ prefix). Credential: a SAS token, an account key, or a TokenCredential."""

    def __init__(self, location: Location, *, sas: str | None = None, account_key: str | None = None,
                 token_credential: TokenCredential | None = None, **client_kwargs: Any) -> None:
        if location.kind != "blob" or location.container is None or location.account_url is None:
            raise AdapterError(f"not a blob location: {location.url}")
        self.location = location
        self.url = location.url
        self._prefix = location.prefix
        self._sas = sas or location.sas
        self._account_key = account_key
        self._token_credential = token_credential
        credential: Any
        if self._sas:
            credential = self._sas
        elif account_key:
            credential = {"account_name": location.account_name, "account_key": account_key}
        elif token_credential is not None:
            credential = token_credential
        else:
            credential = None  # anonymous (public container)
        self.container = ContainerClient(
            account_url=location.account_url, container_name=location.container, credential=credential,
            max_single_put_size=256 * 1024 * 1024, **client_kwargs,
        )
        self._udk_lock = threading.Lock()
        self._udk: Any = None

    def __repr__(self) -> str:
        return f"BlobStore({self.url!r})"

    def _full(self, name: str) -> str:
        return self._prefix + check_name(name)

    # --- reading -------------------------------------------------------------
    def list(self, prefix: str = "", extensions: Iterable[str] | None = None,
             limit: int | None = None) -> Iterator[str]:
        """Stream names page by page; only one page is held in memory."""
        exts = normalize_extensions(extensions)
        check_prefix(prefix)
        if limit is not None and limit <= 0:
            return
        start = self._prefix + prefix
        cut = len(self._prefix)
        count = 0
        pages = self.container.list_blob_names(
            name_starts_with=start or None, results_per_page=PAGE_SIZE
        ).by_page()
        try:
            for page in pages:
                for full in page:
                    if exts is not None and not full.lower().endswith(exts):
                        continue
                    yield full[cut:]
                    count += 1
                    if limit is not None and count >= limit:
                        return
        except ResourceNotFoundError:
            raise LocationError("container_not_found", f"container {self.location.container!r} not found") \
                from None

    def read_bytes(self, name: str) -> bytes:
        try:
            return self.container.download_blob(self._full(name), max_concurrency=1).readall()
        except ResourceNotFoundError:
            raise NotFoundError(f"{name!r} not found in {self.url}") from None

    def read_head(self, name: str, size: int) -> tuple[bytes, bool]:
        """The first `size` bytes and whether that is the whole blob (one ranged read)."""
        try:
            stream = self.container.download_blob(self._full(name), offset=0, length=size + 1,
                                                  max_concurrency=1)
            data = stream.readall()
        except ResourceNotFoundError:
            raise NotFoundError(f"{name!r} not found in {self.url}") from None
        return data[:size], len(data) <= size

    def exists(self, name: str) -> bool:
        return bool(self.container.get_blob_client(self._full(name)).exists())

    # --- writing -------------------------------------------------------------
    def write_bytes(self, name: str, data: bytes, *, overwrite: bool = True) -> None:
        """One Put Blob (atomic); with overwrite=False the service checks If-None-Match: *."""
        try:
            self.container.upload_blob(self._full(name), data, overwrite=overwrite, max_concurrency=1)
        except ResourceExistsError:
            raise AlreadyExistsError(f"{name!r} already exists in {self.url}") from None
        except HttpResponseError as exc:
            if exc.status_code == 409 and not overwrite:
                raise AlreadyExistsError(f"{name!r} already exists in {self.url}") from None
            raise

    def write_json(self, name: str, obj: Any, *, overwrite: bool = True) -> None:
        self.write_bytes(name, json_bytes(obj), overwrite=overwrite)

    def delete(self, name: str) -> None:
        """Idempotent: deleting a missing blob is not an error."""
        with contextlib.suppress(ResourceNotFoundError):
            self.container.delete_blob(self._full(name))

    # --- links ---------------------------------------------------------------
    def child_url(self, name: str) -> str:
        base = f"{self.location.account_url}/{self.location.container}"
        return f"{base}/{quote(self._full(name))}"

    @property
    def max_link_lifetime(self) -> timedelta | None:
        """How long a link signed now may live: a user-delegation SAS ends with its delegation key,
        which Azure issues for 7 days at most; an account-key SAS has no such limit (None)."""
        if self._account_key:
            return None
        return USER_DELEGATION_MAX

    def download_link(self, name: str, expiry: timedelta) -> str:
        """Read-only SAS link valid from now (the service clock) for `expiry`, capped at what the
        credential allows: account-key SAS when a key is known, else user-delegation SAS."""
        full = self._full(name)
        now = clock.utcnow()
        start = now - timedelta(minutes=5)
        end = now + expiry
        kwargs: dict[str, Any] = {}
        if self._account_key:
            kwargs["account_key"] = self._account_key
        elif self._token_credential is not None:
            end = min(end, now + USER_DELEGATION_MAX)
            kwargs["user_delegation_key"] = self._delegation_key(start, end)
        else:
            raise AdapterError(
                f"cannot sign a download link for {self.url}: no account key and no managed identity "
                "(a caller's SAS is never handed back)"
            )
        token = generate_blob_sas(
            account_name=self.location.account_name or "",
            container_name=self.location.container or "",
            blob_name=full,
            permission=BlobSasPermissions(read=True),
            start=start,
            expiry=end,
            **kwargs,
        )
        return f"{self.child_url(name)}?{token}"

    def _delegation_key(self, start: datetime, end: datetime) -> Any:
        """A user delegation key, reused while it covers the requested expiry."""
        with self._udk_lock:
            key = self._udk
            if key is not None:
                key_end = datetime.fromisoformat(key.signed_expiry.replace("Z", "+00:00"))
                if key_end >= end:
                    return key
            from azure.storage.blob import BlobServiceClient

            service = BlobServiceClient(self.location.account_url or "", credential=self._token_credential)
            self._udk = service.get_user_delegation_key(start, end)
            return self._udk
