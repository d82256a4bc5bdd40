"""A local secret store: one JSON file `{name: value}` with mode 0600 (the file the scorer reads
through MDBATCH_SECRETS_FILE, see docs/contracts.md)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import AdapterError, SecretNotFoundError
from ..filelock import exclusive_lock
from .base import check_secret_name


class LocalSecretStore:
    """Read-modify-write under an flock so several processes (host, workers) can share the file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"LocalSecretStore({str(self.path)!r})"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with exclusive_lock(self.path.with_name(self.path.name + ".lock")):
            yield

    def _load(self) -> dict[str, str]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            raise AdapterError(f"the secret file {self.path} is not valid JSON") from None
        if not isinstance(data, dict):
            raise AdapterError(f"the secret file {self.path} must hold a JSON object")
        return {str(k): str(v) for k, v in data.items()}

    def _save(self, data: dict[str, str]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=0, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def get(self, name: str) -> str:
        check_secret_name(name)
        data = self._load()
        if name not in data:
            raise SecretNotFoundError(f"secret {name!r} not found in the local secret store")
        return data[name]

    def set(self, name: str, value: str) -> None:
        check_secret_name(name)
        with self._locked():
            data = self._load()
            data[name] = value
            self._save(data)

    def set_if_absent(self, name: str, value: str) -> str:
        """Store `value` unless the name exists; return what is stored (atomic under the file lock)."""
        check_secret_name(name)
        with self._locked():
            data = self._load()
            if name in data:
                return data[name]
            data[name] = value
            self._save(data)
            return value

    def delete(self, name: str) -> None:
        check_secret_name(name)
        with self._locked():
            data = self._load()
            if data.pop(name, None) is not None:
                self._save(data)
