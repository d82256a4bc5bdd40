"""Settings: one reader of MDBATCH_* with defaults and errors naming the variable; the factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.backends import Backends, compute_from_settings, from_settings, secrets_from_settings
from adapters.compute.local import LocalComputeBackend
from adapters.errors import LocationError
from adapters.secrets import KeyVaultSecretStore, LocalSecretStore
from adapters.settings import Settings, SettingsError
from adapters.storage import BlobStore, LocalStore


def test_defaults_are_safe_for_azure(tmp_path: Path) -> None:
    s = Settings.from_env({})
    assert s.allowed_hosts == ("*.blob.core.windows.net",)
    assert not s.allow_local_storage and not s.allow_azurite
    assert s.secrets_backend == "local" and s.compute_backend == "local"
    assert s.secrets_path == s.state_dir / "secrets.json"
    assert s.models_path == s.state_dir / "models"


def test_values_parsed_from_env(tmp_path: Path) -> None:
    s = Settings.from_env({
        "MDBATCH_STATE_DIR": str(tmp_path), "MDBATCH_ALLOWED_HOSTS": "*.blob.core.windows.net, x.example",
        "MDBATCH_ALLOW_LOCAL_STORAGE": "true", "MDBATCH_ALLOW_AZURITE": "1", "MDBATCH_LOCAL_WORKERS": "3",
        "MDBATCH_KEY_VAULT_URL": "https://kv.vault.azure.net", "MDBATCH_SECRET_CACHE_TTL_S": "5",
        "AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true", "MDBATCH_DEFAULT_MODEL": "MDV5B",
    })
    assert s.state_dir == tmp_path and s.allowed_hosts == ("*.blob.core.windows.net", "x.example")
    assert s.allow_local_storage and s.allow_azurite and s.local_workers == 3
    assert s.secrets_backend == "keyvault"  # chosen because a vault URL is set
    assert s.secret_cache_ttl_s == 5.0 and s.default_model == "MDV5B"
    assert s.storage_connection_string == "UseDevelopmentStorage=true"


@pytest.mark.parametrize("env, var", [
    ({"MDBATCH_LOCAL_WORKERS": "many"}, "MDBATCH_LOCAL_WORKERS"),
    ({"MDBATCH_LOCAL_WORKERS": "0"}, "MDBATCH_LOCAL_WORKERS"),
    ({"MDBATCH_ALLOW_AZURITE": "maybe"}, "MDBATCH_ALLOW_AZURITE"),
    ({"MDBATCH_COMPUTE_BACKEND": "batch"}, "MDBATCH_COMPUTE_BACKEND"),
    ({"MDBATCH_COMPUTE_BACKEND": "azureml"}, "MDBATCH_AML_SUBSCRIPTION_ID"),
    ({"MDBATCH_SECRETS_BACKEND": "keyvault"}, "MDBATCH_KEY_VAULT_URL"),
    ({"MDBATCH_KEY_VAULT_URL": "http://kv"}, "MDBATCH_KEY_VAULT_URL"),
    ({"MDBATCH_AML_DATASTORE": "work"}, "MDBATCH_AML_DATASTORE_URL"),
])
def test_errors_name_the_variable(env: dict[str, str], var: str) -> None:
    with pytest.raises(SettingsError, match=var):
        Settings.from_env(env)


def test_factory_chooses_backends(tmp_path: Path, azurite: object) -> None:
    local = Settings(state_dir=tmp_path, allow_local_storage=True)
    assert isinstance(secrets_from_settings(local), LocalSecretStore)
    assert isinstance(secrets_from_settings(Settings(state_dir=tmp_path, secrets_backend="keyvault",
                                                     key_vault_url="https://kv.vault.azure.net")),
                      KeyVaultSecretStore)
    compute = compute_from_settings(local)
    try:
        assert isinstance(compute, LocalComputeBackend)
        assert compute.extra_env["MDBATCH_SECRETS_FILE"] == str((tmp_path / "secrets.json").absolute())
    finally:
        compute.close()  # type: ignore[attr-defined]
    conn = azurite.connection_string  # type: ignore[attr-defined]
    endpoint = azurite.blob_endpoint  # type: ignore[attr-defined]
    b = from_settings(Settings(state_dir=tmp_path, storage_connection_string=conn))
    assert isinstance(b, Backends)
    work_local = b.work_store()
    assert isinstance(work_local, LocalStore)  # default work location: STATE_DIR/work
    work_local.write_bytes("a.bin", b"A")
    assert list(b.reader(work_local)(["a.bin"])) == [("a.bin", b"A")]
    with pytest.raises(LocationError) as err:  # callers' URLs obey the policy: no Azurite by default
        b.store(f"{endpoint}/x123")
    assert err.value.code == "host_not_allowed"
    # the operator's own work location may be Azurite (trusted setting, not a caller's URL)
    work = from_settings(Settings(state_dir=tmp_path, storage_connection_string=conn,
                                  work_url=f"{endpoint}/work")).work_store()
    assert isinstance(work, BlobStore) and work.url == f"{endpoint}/work"
