"""The secret store interface and the name rule shared by every implementation."""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from ..errors import AdapterError

_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")


@runtime_checkable
class SecretStore(Protocol):
    """get / set / delete by name. Values are strings (a SAS token, an account key)."""

    def get(self, name: str) -> str: ...  # raises SecretNotFoundError
    def set(self, name: str, value: str) -> None: ...
    def delete(self, name: str) -> None: ...  # idempotent


def check_secret_name(name: str) -> str:
    """Key Vault's rule (`[0-9A-Za-z-]`, at most 127), applied everywhere so names port between stores."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise AdapterError(f"invalid secret name {name!r}: use 1-127 letters, digits and hyphens")
    return name
