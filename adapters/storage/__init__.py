"""Storage: Blob containers (Azure, Azurite) and local folders behind one `Store` interface.

Entry points:
- `parse_location(url, settings)` -> Location (shape and policy only, no network)
- `validate_input_location(url, need_list=True, settings=None)` -> Location; raises LocationError
  (with `.code` and a message fit for a 400) for a malformed URL, a host not on the allowlist,
  an expired / not-yet-valid SAS, missing read or list permission, a missing container.
- `open_store(url, settings, sas=None, secrets=None)` -> Store, credentials chosen here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from ..errors import LocationError
from ..settings import Settings
from .base import Store, check_name, normalize_extensions
from .blob import BlobStore, account_key_for, parse_connection_string
from .local import LocalStore
from .locations import (
    Location,
    SasInfo,
    check_caller_location,
    check_sas,
    confine_local,
    parse_location,
    private_paths,
    sas_info,
)
from .parallel import ParallelReader, read_many

if TYPE_CHECKING:
    from ..secrets.base import SecretStore

__all__ = [
    "BlobStore",
    "LocalStore",
    "Location",
    "LocationError",
    "ParallelReader",
    "SasInfo",
    "Store",
    "account_key_for",
    "account_key_secret_name",
    "check_caller_location",
    "check_name",
    "check_sas",
    "confine_local",
    "normalize_extensions",
    "open_store",
    "parse_connection_string",
    "parse_location",
    "private_paths",
    "read_many",
    "sas_info",
    "validate_input_location",
]


def account_key_secret_name(account: str) -> str:
    """Where an account key may be kept in the secret store (for account-key SAS links)."""
    return f"mdb-account-key-{account}"


def open_store(url: str, settings: Settings | None = None, *, sas: str | None = None,
               secrets: SecretStore | None = None, token_credential: Any = None) -> Store:
    """Open the location `url` with the credential that fits it.

    Order: an explicit `sas` (e.g. a parked request SAS) or the URL's own SAS; the account key
    from AZURE_STORAGE_CONNECTION_STRING when it names this account (Azurite, dev); an account
    key kept in the secret store; else the managed identity (DefaultAzureCredential).
    """
    settings = settings or Settings.from_env()
    loc = parse_location(url, settings)
    if loc.kind == "local":
        assert loc.path is not None
        return LocalStore(loc.path)
    if sas or loc.sas:
        return BlobStore(loc, sas=sas or loc.sas)
    key = account_key_for(loc, settings.storage_connection_string)
    if key is None and secrets is not None and loc.account_name:
        from ..errors import SecretNotFoundError

        try:
            key = secrets.get(account_key_secret_name(loc.account_name))
        except SecretNotFoundError:
            key = None
    if key is not None:
        return BlobStore(loc, account_key=key)
    if token_credential is None:
        from azure.identity import DefaultAzureCredential

        token_credential = DefaultAzureCredential()
    return BlobStore(loc, token_credential=token_credential)


def validate_input_location(url: str, need_list: bool = True, settings: Settings | None = None, *,
                            check_remote: bool = True, secrets: SecretStore | None = None,
                            token_credential: Any = None) -> Location:
    """Check an input location before a request starts; raise LocationError with a clear message.

    Offline checks first (shape, allowlist, SAS window and permissions), then one cheap request
    (list one name, or read the container's properties) unless `check_remote` is False.
    """
    settings = settings or Settings.from_env()
    loc = check_caller_location(url, settings)  # a caller's local folder: absolute, under a root
    if loc.kind == "local":
        assert loc.path is not None
        if check_remote and not loc.path.is_dir():
            raise LocationError("container_not_found", f"local folder {loc.path} does not exist")
        return loc
    if loc.sas:
        check_sas(loc.sas, need_read=True, need_list=need_list)
    if not check_remote:
        return loc
    store = open_store(url, settings, secrets=secrets, token_credential=token_credential)
    assert isinstance(store, BlobStore)
    try:
        if need_list:
            next(iter(store.container.list_blob_names(results_per_page=1).by_page()), None)
        elif not loc.sas:
            store.container.get_container_properties()
    except ResourceNotFoundError:
        raise LocationError(
            "container_not_found", f"container {loc.container!r} not found at {loc.account_url}"
        ) from None
    except ClientAuthenticationError as exc:
        raise LocationError("access_denied", f"storage refused the credentials: {_reason(exc)}") from None
    except HttpResponseError as exc:
        if exc.status_code == 404:
            raise LocationError("container_not_found", f"container {loc.container!r} not found") from None
        if exc.status_code == 403:
            raise LocationError("access_denied", f"storage refused access: {_reason(exc)}") from None
        raise LocationError("storage_error", f"storage answered {exc.status_code}: {_reason(exc)}") from None
    except LocationError:
        raise
    return loc


def _reason(exc: HttpResponseError) -> str:
    code = getattr(exc, "error_code", None) or getattr(exc, "reason", None) or "error"
    return str(code)
