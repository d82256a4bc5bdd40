"""Review findings in adapters/: SAS redaction in encoded forms, SAS checks, local store roots."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    ResourceTypes,
    generate_account_sas,
    generate_container_sas,
)

from adapters.errors import AdapterError, LocationError, NotFoundError
from adapters.redaction import redact
from adapters.storage import LocalStore, check_sas

NOW = datetime.now(UTC)
KEY = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"
SIG = "AbCdEf0123456789secretSIGNATUREvalue%2B%2F%3D"


# --- redaction ------------------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    # a SAS URL passed through urlencode/quote (a list URL inside another URL, a redirect target)
    "GET /api?list=https%3A%2F%2Facct.blob.core.windows.net%2Fc%3Fsv%3D2024%26sig%3DAbCdEf0123456789secret",
    "list=https%253A%252F%252Facct%252Fc%253Fsv%253D1%2526sig%253DAbCdEf0123456789secret",  # twice
    # a SAS split into JSON fields (the SDK's and our own reprs of parsed tokens)
    '{"sv": "2024-08-04", "sig": "AbCdEf0123456789secret", "sp": "rl"}',
    "{'sig': 'AbCdEf0123456789secret'}",
    json.dumps({"url": "https://acct.blob.core.windows.net/c?sv=1&sig=AbCdEf0123456789secret"}),
])
def test_encoded_and_json_sas_signatures_are_redacted(line: str) -> None:
    out = redact(line)
    assert "AbCdEf0123456789secret" not in out, out
    assert "REDACTED" in out


def test_redaction_leaves_plain_words_alone() -> None:
    assert redact("design signals: signature=none, sigma=0.5") == "design signals: signature=none, sigma=0.5"


# --- SAS checks ----------------------------------------------------------------------------------

def test_sas_with_stored_access_policy_is_not_refused_for_missing_permissions() -> None:
    """With `si=` the permissions and times may live in the container's stored access policy, not
    in the token: the token has no `sp`/`se`, yet it can read and list. Refusing it as 'lacks
    read' rejects a valid SAS (the round trip to the service decides)."""
    token = generate_container_sas("acct", "images", account_key=KEY, policy_id="read-list-policy")
    assert "si=" in token and "sp=" not in token
    info = check_sas(token, need_read=True, need_list=True)
    assert info.permissions == ""


def test_sas_with_policy_and_own_permissions_is_still_checked() -> None:
    token = generate_container_sas("acct", "images", account_key=KEY, policy_id="p", permission="r")
    with pytest.raises(LocationError) as err:
        check_sas(token, need_read=True, need_list=True)
    assert err.value.code == "sas_missing_list"


@pytest.mark.parametrize("services, types, need_list, code", [
    ("f", "co", False, "sas_wrong_service"),   # a Files-only account SAS cannot read blobs
    ("b", "s", False, "sas_missing_read"),      # service-level only: no blob (object) access
    ("b", "o", True, "sas_missing_list"),       # objects only: listing is a container operation
])
def test_account_sas_resource_types_and_services_are_checked(services: str, types: str, need_list: bool,
                                                             code: str) -> None:
    token = generate_account_sas("acct", KEY, resource_types=ResourceTypes.from_string(types),
                                 permission=AccountSasPermissions(read=True, list=True),
                                 expiry=NOW + timedelta(hours=1))
    token = token.replace("ss=b", f"ss={services}")
    with pytest.raises(LocationError) as err:
        check_sas(token, need_read=True, need_list=need_list)
    assert err.value.code == code


def test_account_sas_for_blob_objects_and_containers_passes() -> None:
    token = generate_account_sas("acct", KEY, resource_types=ResourceTypes.from_string("co"),
                                 permission=AccountSasPermissions(read=True, list=True),
                                 expiry=NOW + timedelta(hours=1))
    check_sas(token, need_read=True, need_list=True)


# --- local store: a symlink must not carry writes out of the root ----------------------------------

def test_local_store_does_not_write_or_delete_through_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.json").write_text("keep")
    root = tmp_path / "root"
    root.mkdir()
    (root / "results").symlink_to(outside, target_is_directory=True)
    store = LocalStore(root)
    with pytest.raises((NotFoundError, AdapterError)):
        store.write_bytes("results/victim.json", b"overwritten")
    with pytest.raises((NotFoundError, AdapterError)):
        store.write_bytes("results/new.json", b"planted")
    store.delete("results/victim.json")  # idempotent delete: no error, and nothing deleted outside
    with pytest.raises(NotFoundError):
        store.download_link("results/victim.json", timedelta(hours=1))
    assert not store.exists("results/victim.json")
    assert (outside / "victim.json").read_text() == "keep"
    assert not (outside / "new.json").exists()
    assert [p.name for p in outside.iterdir()] == ["victim.json"], "temp file left outside"
    store.write_bytes("inside/ok.json", b"{}")  # ordinary writes still work
    assert store.read_bytes("inside/ok.json") == b"{}"
