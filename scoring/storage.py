"""Where images, manifests and results live: local files, ``file://`` URLs, Azure Blob (incl. Azurite).

Credentials follow docs/contracts.md: a SAS in the URL, else a ``secret_ref``
resolved from ``MDBATCH_SECRET_<REF>`` / ``MDBATCH_SECRETS_FILE`` / Key Vault,
else ``AZURE_STORAGE_CONNECTION_STRING`` when its account matches the URL,
else ``DefaultAzureCredential``. Secrets are never logged or put in errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class StorageError(Exception):
    """A location that cannot be read or written (message carries no secret)."""


def redact(url: str) -> str:
    """URL without its query string (SAS tokens live there)."""
    p = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((p.scheme, p.netloc, p.path, "", ""))


def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://", "file://"))


def file_url_to_path(url: str) -> Path:
    p = urllib.parse.urlsplit(url)
    return Path(urllib.parse.unquote(p.path))


def resolve_secret(ref: str) -> str:
    """A ``secret_ref`` -> its value (a SAS token without '?'), in the contract's order."""
    env_name = "MDBATCH_SECRET_" + ref.upper().replace("-", "_")
    if os.environ.get(env_name):
        return os.environ[env_name].lstrip("?")
    secrets_file = os.environ.get("MDBATCH_SECRETS_FILE")
    if secrets_file:
        try:
            data = json.loads(Path(secrets_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StorageError(f"cannot read MDBATCH_SECRETS_FILE: {type(e).__name__}") from None
        if isinstance(data, dict) and isinstance(data.get(ref), str):
            return data[ref].lstrip("?")
    vault = os.environ.get("MDBATCH_KEY_VAULT_URL")
    if vault:
        try:
            from azure.identity import DefaultAzureCredential
            from azure.keyvault.secrets import SecretClient

            value = SecretClient(vault_url=vault, credential=DefaultAzureCredential()).get_secret(ref).value
        except Exception as e:
            raise StorageError(f"secret {ref!r} not readable from Key Vault: {type(e).__name__}") from None
        if value:
            return value.lstrip("?")
    raise StorageError(f"secret {ref!r} not found (env {env_name}, MDBATCH_SECRETS_FILE, Key Vault)")


@dataclass(frozen=True)
class BlobPath:
    """A blob URL split into account endpoint, container and blob name (no SAS)."""

    account_url: str  # https://acct.blob.core.windows.net or http://127.0.0.1:10000/devstoreaccount1
    account: str
    container: str
    name: str  # "" for a container URL
    sas: str | None


def parse_blob_url(url: str) -> BlobPath:
    p = urllib.parse.urlsplit(url)
    parts = [urllib.parse.unquote(x) for x in p.path.split("/") if x != ""]
    host = p.hostname or ""
    path_style = host in ("127.0.0.1", "localhost") or host.replace(".", "").isdigit() or p.port is not None
    if path_style:  # Azurite / IP style: /account/container/name
        if not parts:
            raise StorageError(f"blob URL has no account: {redact(url)}")
        account, parts = parts[0], parts[1:]
        account_url = f"{p.scheme}://{p.netloc}/{account}"
    else:
        account = host.split(".")[0]
        account_url = f"{p.scheme}://{p.netloc}"
    if not parts:
        raise StorageError(f"blob URL has no container: {redact(url)}")
    return BlobPath(account_url, account, parts[0], "/".join(parts[1:]), p.query or None)


def _conn_string_matches(conn: str, bp: BlobPath) -> bool:
    kv = dict(x.split("=", 1) for x in conn.split(";") if "=" in x)
    endpoint = kv.get("BlobEndpoint", "").rstrip("/")
    if endpoint:
        return endpoint.lower() == bp.account_url.rstrip("/").lower()
    return kv.get("AccountName", "").lower() == bp.account.lower()


class BlobContainer:
    """A container client built with the contract's credential rules."""

    def __init__(self, url: str, secret_ref: str | None = None) -> None:
        from azure.storage.blob import BlobServiceClient

        self.bp = parse_blob_url(url)
        self.url = redact(url)
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        sas = self.bp.sas or (resolve_secret(secret_ref) if secret_ref else None)
        kwargs: dict[str, Any] = {"max_single_put_size": 64 * 1024 * 1024}
        if sas:
            svc = BlobServiceClient(account_url=self.bp.account_url, credential=sas, **kwargs)
        elif conn and _conn_string_matches(conn, self.bp):
            svc = BlobServiceClient.from_connection_string(conn, **kwargs)
        else:
            from azure.identity import DefaultAzureCredential

            svc = BlobServiceClient(account_url=self.bp.account_url, credential=DefaultAzureCredential(),
                                    **kwargs)
        self.client = svc.get_container_client(self.bp.container)
        self.prefix = self.bp.name.strip("/")

    def _full(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read_bytes(self, name: str) -> bytes:
        try:
            return self.client.download_blob(self._full(name), max_concurrency=1).readall()
        except Exception as e:
            raise StorageError(f"cannot read blob {self._full(name)!r} in {self.url}: "
                               f"{type(e).__name__}") from None

    def write_bytes(self, name: str, data: bytes) -> None:
        # a single Put Blob (<= max_single_put_size) or a block-list commit: readers never see half
        try:
            self.client.upload_blob(self._full(name), data, overwrite=True)
        except Exception as e:
            raise StorageError(f"cannot write blob {self._full(name)!r} in {self.url}: "
                               f"{type(e).__name__}") from None

    def exists(self, name: str) -> bool:
        return bool(self.client.get_blob_client(self._full(name)).exists())

    def delete(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.client.delete_blob(self._full(name))


def _split_blob_file_url(url: str) -> tuple[str, str]:
    """Blob URL of one file -> (container URL incl. SAS, blob name)."""
    bp = parse_blob_url(url)
    base = f"{bp.account_url}/{bp.container}"
    return (base + (f"?{bp.sas}" if bp.sas else "")), bp.name


def read_location(loc: str) -> bytes:
    """Bytes of a local path, ``file://`` URL or blob URL (manifest, list)."""
    if loc.startswith("file://"):
        loc = str(file_url_to_path(loc))
    if loc.startswith(("http://", "https://")):
        cont, name = _split_blob_file_url(loc)
        return BlobContainer(cont).read_bytes(name)
    try:
        return Path(loc).read_bytes()
    except OSError as e:
        raise StorageError(f"cannot read {loc}: {e.strerror or type(e).__name__}") from None


class Location:
    """A writable file location (local path, ``file://`` URL or blob URL) with sibling files."""

    def __init__(self, loc: str) -> None:
        self.raw = loc
        if loc.startswith("file://"):
            loc = str(file_url_to_path(loc))
        self.blob: BlobContainer | None = None
        if loc.startswith(("http://", "https://")):
            cont, self.name = _split_blob_file_url(loc)
            self.blob = BlobContainer(cont)
            self.path: Path | None = None
        else:
            self.path = Path(loc)
            self.name = self.path.name

    def describe(self) -> str:
        return redact(self.raw)

    def sibling(self, suffix: str) -> Location:
        """The location ``self + suffix`` (e.g. the checkpoint beside the output)."""
        if self.blob is not None:
            sib = Location.__new__(Location)
            sib.raw, sib.blob, sib.path, sib.name = self.raw + suffix, self.blob, None, self.name + suffix
            return sib
        return Location(str(self.path) + suffix)

    def write_bytes(self, data: bytes) -> None:
        """Atomic write: temp file + rename locally; one upload for blobs."""
        if self.blob is not None:
            self.blob.write_bytes(self.name, data)
            return
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as e:
            raise StorageError(f"cannot write {self.path}: {e.strerror or type(e).__name__}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise StorageError(f"cannot write {self.path}: {e.strerror or type(e).__name__}") from None
            raise

    def read_bytes(self) -> bytes | None:
        """The bytes, or None when the location does not exist."""
        if self.blob is not None:
            if not self.blob.exists(self.name):
                return None
            return self.blob.read_bytes(self.name)
        assert self.path is not None
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def delete(self) -> None:
        if self.blob is not None:
            self.blob.delete(self.name)
        elif self.path is not None:
            self.path.unlink(missing_ok=True)

    def check_writable(self) -> None:
        """Fail early (before scoring) when a local output folder cannot be created."""
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StorageError(f"cannot create output folder {self.path.parent}: "
                                   f"{e.strerror or type(e).__name__}") from None
            if self.path.is_dir():
                raise StorageError(f"output {self.path} is a folder, not a file")
            if not os.access(self.path.parent, os.W_OK):
                raise StorageError(f"output folder {self.path.parent} is not writable")


def fetch_url(url: str, timeout: float = 60.0) -> bytes:
    """An image given as a full URL (``use_url`` requests): blob-aware, else plain HTTP GET."""
    host = urllib.parse.urlsplit(url).hostname or ""
    conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
    if ".blob.core." in host or (conn and _conn_string_matches(conn, parse_blob_url(url))):
        cont, name = _split_blob_file_url(url)
        return BlobContainer(cont).read_bytes(name)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bytes(r.read())
    except Exception as e:
        raise StorageError(f"cannot fetch {redact(url)}: {type(e).__name__}") from None
