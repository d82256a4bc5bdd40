"""Location validation: allowlist, URL shape, SAS windows and permissions (tokens made by the SDK)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from adapters_fixtures import make_settings, new_container
from azure.storage.blob import (
    AccountSasPermissions,
    BlobSasPermissions,
    ContainerSasPermissions,
    ResourceTypes,
    generate_account_sas,
    generate_blob_sas,
    generate_container_sas,
)

from adapters.errors import LocationError
from adapters.settings import Settings
from adapters.storage import parse_location, validate_input_location

NOW = datetime.now(UTC)
KEY = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"


def _sas(perm: str = "rl", start: datetime | None = None, expiry: datetime | None = None,
         container: str = "images", key: str = KEY, account: str = "acct") -> str:
    return generate_container_sas(account, container, account_key=key,
                                  permission=ContainerSasPermissions.from_string(perm),
                                  start=start, expiry=expiry or NOW + timedelta(hours=2))


def _code(url: str, settings: Settings | None = None, need_list: bool = True) -> str:
    with pytest.raises(LocationError) as err:
        validate_input_location(url, need_list=need_list, settings=settings or Settings(), check_remote=False)
    assert "sig=" not in str(err.value)  # messages never echo the token
    return err.value.code


@pytest.mark.parametrize("url, code", [
    ("https://evil.example.com/images", "host_not_allowed"),
    ("https://acct.blob.core.windows.net.evil.com/images", "host_not_allowed"),
    ("http://acct.blob.core.windows.net/images", "not_https"),
    ("http://127.0.0.1:10000/devstoreaccount1/images", "host_not_allowed"),  # Azurite off by default
    ("http://localhost:10000/devstoreaccount1/images", "host_not_allowed"),
    ("file:///etc", "local_not_allowed"),
    ("/etc/passwd", "local_not_allowed"),
    ("https://acct.blob.core.windows.net/", "malformed_url"),
    ("https://acct.blob.core.windows.net/UPPER", "malformed_url"),
    ("https://acct.blob.core.windows.net/ab", "malformed_url"),
    ("https://acct.blob.core.windows.net/images/../x", "malformed_url"),
    ("https://acct.blob.core.windows.net/images?foo=bar", "malformed_url"),
    ("https://user:pw@acct.blob.core.windows.net/images", "malformed_url"),
    ("ftp://acct.blob.core.windows.net/images", "malformed_url"),
    ("https://acct.blob.core.windows.net:99999/images", "malformed_url"),
    ("", "malformed_url"),
    ("https://acct.blob.core.windows.net/images x", "malformed_url"),
])
def test_refusals_by_default_policy(url: str, code: str) -> None:
    assert _code(url) == code


@pytest.mark.parametrize("host", ["169.254.169.254", "10.0.0.5", "192.168.1.1", "[fd00::1]", "0.0.0.0",
                                  "metadata.google.internal"])
def test_internal_addresses_refused_even_with_wildcard_allowlist(host: str) -> None:
    settings = Settings(allowed_hosts=("*",))
    assert _code(f"https://{host}/images", settings) == "host_not_allowed"


def test_custom_allowlist_and_defaults() -> None:
    settings = Settings(allowed_hosts=("*.blob.core.windows.net", "*.blob.core.usgovcloudapi.net"))
    loc = parse_location("https://acct.blob.core.usgovcloudapi.net/images/a", settings)
    assert loc.account_name == "acct" and loc.prefix == "a/"
    assert Settings().allowed_hosts == ("*.blob.core.windows.net",)


def test_parse_keeps_sas_apart_from_url() -> None:
    sas = _sas()
    loc = parse_location(f"https://acct.blob.core.windows.net/images/site%201/cam?{sas}", Settings())
    assert loc.url == "https://acct.blob.core.windows.net/images/site%201/cam"
    assert loc.prefix == "site 1/cam/" and loc.container == "images" and loc.sas == sas
    assert "sig" not in repr(loc)


def test_sas_window_and_permissions_from_sdk_tokens() -> None:
    base = "https://acct.blob.core.windows.net/images?"
    assert _code(base + _sas(expiry=NOW - timedelta(minutes=1))) == "sas_expired"
    assert _code(base + _sas(start=NOW + timedelta(hours=1))) == "sas_not_yet_valid"
    assert _code(base + _sas("r")) == "sas_missing_list"
    assert _code(base + _sas("l")) == "sas_missing_read"
    assert _code(base + _sas("w")) == "sas_missing_read"
    blob_sas = generate_blob_sas("acct", "images", "x.jpg", account_key=KEY,
                                 permission=BlobSasPermissions(read=True), expiry=NOW + timedelta(hours=1))
    assert _code(base + blob_sas) == "sas_missing_list"
    # read-only is enough when the request lists nothing (explicit image list)
    validate_input_location(base + _sas("r"), need_list=False, settings=Settings(), check_remote=False)
    validate_input_location(base + _sas("rl", start=NOW - timedelta(minutes=1)), settings=Settings(),
                            check_remote=False)
    account_sas = generate_account_sas("acct", KEY, ResourceTypes(container=True, object=True),
                                       AccountSasPermissions(read=True, list=True), NOW + timedelta(hours=1))
    validate_input_location(base + account_sas, settings=Settings(), check_remote=False)


def test_remote_checks_against_azurite(azurite: object, tmp_path: Path) -> None:
    service, name = new_container(azurite)
    settings = make_settings(tmp_path)
    endpoint = azurite.blob_endpoint  # type: ignore[attr-defined]
    key = azurite.account_key  # type: ignore[attr-defined]
    good = _sas("rl", container=name, key=key, account="devstoreaccount1")
    loc = validate_input_location(f"{endpoint}/{name}/pre?{good}", settings=settings)
    assert loc.container == name and loc.prefix == "pre/"

    missing = "m" + uuid.uuid4().hex[:12]
    sas = _sas("rl", container=missing, key=key, account="devstoreaccount1")
    with pytest.raises(LocationError) as err:
        validate_input_location(f"{endpoint}/{missing}?{sas}", settings=settings)
    assert err.value.code == "container_not_found" and missing in str(err.value)

    forged = _sas("rl", container=name, key=KEY, account="devstoreaccount1")  # signed with a wrong key
    with pytest.raises(LocationError) as err:
        validate_input_location(f"{endpoint}/{name}?{forged}", settings=settings)
    assert err.value.code == "access_denied"

    # without a SAS the service's own credential (connection string key) is used
    with_key = make_settings(tmp_path, storage_connection_string=azurite.connection_string)  # type: ignore
    validate_input_location(f"{endpoint}/{name}", settings=with_key)
    with pytest.raises(LocationError) as err:
        validate_input_location(f"{endpoint}/{missing}", settings=with_key, need_list=False)
    assert err.value.code == "container_not_found"
    service.delete_container(name)


def test_local_folder_only_when_allowed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, local_roots=(str(tmp_path),))  # issue 14: under a root only
    photos = tmp_path / "photos"  # tmp_path itself holds the state folder, which is never a source
    photos.mkdir()
    loc = validate_input_location(str(photos), settings=settings)
    assert loc.kind == "local" and loc.url == photos.as_uri()
    assert validate_input_location(photos.as_uri(), settings=settings).path == photos
    with pytest.raises(LocationError) as err:
        validate_input_location(str(tmp_path / "nope"), settings=settings)
    assert err.value.code == "container_not_found"
    with pytest.raises(LocationError) as err:
        validate_input_location("file://otherhost/x", settings=settings)
    assert err.value.code == "malformed_url"
