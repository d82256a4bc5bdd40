"""Typed errors the HTTP layer maps to clear 4xx messages."""

from __future__ import annotations


class AdapterError(Exception):
    """Base for errors raised by the adapters."""


class LocationError(AdapterError):
    """A storage location URL is unusable (malformed, not allowed, expired SAS, ...).

    `code` is a short machine-readable reason; `str(err)` is the human message (no secrets).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NotFoundError(AdapterError, FileNotFoundError):
    """A blob, file or secret does not exist."""


class AlreadyExistsError(AdapterError, FileExistsError):
    """A write-once target already exists."""


class SecretNotFoundError(NotFoundError):
    """The named secret is not in the store."""
