"""The one place that turns settings into storage, secrets and compute backends."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from .compute.base import ComputeBackend
from .errors import AdapterError
from .secrets.base import SecretStore
from .settings import Settings
from .storage import ParallelReader, open_store, parse_location
from .storage.base import Store


@dataclass
class Backends:
    """Backends for one process, built lazily from settings (compute keeps state: one per process)."""

    settings: Settings
    _secrets: SecretStore | None = None
    _compute: ComputeBackend | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def secrets(self) -> SecretStore:
        with self._lock:
            if self._secrets is None:
                self._secrets = secrets_from_settings(self.settings)
            return self._secrets

    @property
    def compute(self) -> ComputeBackend:
        with self._lock:
            if self._compute is None:
                self._compute = compute_from_settings(self.settings, secrets=self.secrets)
            return self._compute

    def store(self, url: str, *, sas: str | None = None) -> Store:
        """A store for `url` (policy-checked); credentials chosen by `open_store`."""
        return open_store(url, self.settings, sas=sas, secrets=self.secrets)

    def reader(self, store: Store) -> ParallelReader:
        """Bounded parallel reads of one store (MDBATCH_READ_WORKERS threads)."""
        return ParallelReader(store.read_bytes, self.settings.read_workers)

    def work_store(self) -> Store:
        """Where manifests and shard results go (MDBATCH_WORK_URL): the service's own location."""
        return open_store(self.settings.work_location, _trusted(self.settings), secrets=self.secrets)


def _trusted(settings: Settings) -> Settings:
    """The work location is configured by the operator, not a caller: local/Azurite allowed for it."""
    from dataclasses import replace

    return replace(settings, allow_local_storage=True, allow_azurite=True)


def secrets_from_settings(settings: Settings) -> SecretStore:
    if settings.secrets_backend == "keyvault":
        from .secrets.keyvault import KeyVaultSecretStore

        assert settings.key_vault_url
        return KeyVaultSecretStore(settings.key_vault_url, ttl_s=settings.secret_cache_ttl_s)
    from .secrets.local import LocalSecretStore

    return LocalSecretStore(settings.secrets_path)


def compute_from_settings(settings: Settings, *, secrets: SecretStore | None = None,
                          ml_client: Any = None) -> ComputeBackend:
    if settings.compute_backend == "azureml":
        from .compute.azureml import AzureMLComputeBackend

        return AzureMLComputeBackend(settings, ml_client=ml_client)
    if settings.compute_backend == "local":
        from .compute.local import LocalComputeBackend

        env: dict[str, str] = {"MDBATCH_SECRETS_FILE": str(settings.secrets_path.absolute())}
        if settings.storage_connection_string:
            env["AZURE_STORAGE_CONNECTION_STRING"] = settings.storage_connection_string
        if settings.key_vault_url:
            env["MDBATCH_KEY_VAULT_URL"] = settings.key_vault_url
        trusted = _trusted(settings)

        def output_exists(url: str) -> bool:
            loc = parse_location(url.rsplit("/", 1)[0], trusted)
            store = open_store(loc.url, trusted, secrets=secrets)
            return store.exists(unquote(url.rsplit("/", 1)[1]))

        return LocalComputeBackend(
            settings.state_dir, workers=settings.local_workers, model_dir=settings.models_path,
            code_dir=settings.code_dir, python=settings.python, env=env, output_exists=output_exists,
        )
    raise AdapterError(f"unknown compute backend {settings.compute_backend!r}")


_DEFAULT: Backends | None = None
_DEFAULT_LOCK = threading.Lock()


def from_settings(settings: Settings | None = None) -> Backends:
    """The process-wide Backends for `settings` (default: Settings.from_env(), built once)."""
    global _DEFAULT
    if settings is not None:
        return Backends(settings)
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Backends(Settings.from_env())
        return _DEFAULT
