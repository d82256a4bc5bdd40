"""Secret stores (Key Vault, local 0600 file) and parking of request SAS tokens."""

from __future__ import annotations

from ..errors import SecretNotFoundError
from .base import SecretStore, check_secret_name
from .keyvault import KeyVaultSecretStore
from .local import LocalSecretStore
from .parking import check_ref, park_sas, park_url, secret_name, split_sas, unpark
from .service_key import SERVICE_KEY_NAME, service_key

__all__ = [
    "SERVICE_KEY_NAME", "KeyVaultSecretStore", "LocalSecretStore", "SecretNotFoundError", "SecretStore",
    "check_ref", "check_secret_name", "park_sas", "park_url", "secret_name", "service_key", "split_sas",
    "unpark",
]
