"""A logging filter that removes secrets (SAS signatures, account keys, bearer tokens) from log records.

Every entry point calls `install_redaction()` once; from then on every log record of the
process is cleaned where it is made, whichever logger or handler writes it.
"""

from __future__ import annotations

import logging
import re

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # SAS signature in a query string or a bare token: sig=...
    (re.compile(r"(?i)(\bsig=)[^&\s\"'<>;,]+"), r"\1REDACTED"),
    # the same URL-encoded once or more (sig%3D..., sig%253D...), up to the encoded '&' (%26, %2526)
    (re.compile(r"(?i)((?<![a-z])sig%(?:25)*3D)(?:(?!%(?:25)*26)[^&\s\"'<>;,])+"), r"\1REDACTED"),
    # a parsed token in JSON or a repr: "sig": "..." / 'sig': '...'
    (re.compile(r"(?i)([\"']sig[\"']\s*:\s*[\"'])[^\"']+"), r"\1REDACTED"),
    # connection strings: AccountKey=..., SharedAccessSignature=..., SharedAccessKey=...
    (re.compile(r"(?i)(\b(?:AccountKey|SharedAccessKey|SharedAccessSignature)=)[^;\s\"'<>]+"), r"\1REDACTED"),
    # HTTP authorization headers and bearer tokens
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1REDACTED"),
    (re.compile(r"(?i)(\bSharedKey\s+[^:\s]+:)[A-Za-z0-9+/=]+"), r"\1REDACTED"),
    # 'x-ms-...-key': value or "account_key": "...", key=... in kwargs
    (re.compile(r"(?i)((?:account_key|client_secret|password)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,;&]+"),
     r"\1REDACTED"),
]


def redact(text: str) -> str:
    """Return `text` with anything that looks like a secret replaced by REDACTED."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrite the formatted message (and exception text) of each record with secrets removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()
_factory_installed = False


def _install_record_factory() -> None:
    """Clean every record where it is made, so handlers added later (by a host, a library,
    logging.basicConfig) never see a secret: a filter on handlers only covers the ones that exist."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def make_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _FILTER.filter(record)
        return record

    logging.setLogRecordFactory(make_record)
    _factory_installed = True


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Redact every log record of this process from now on; idempotent.

    The record factory covers all loggers and handlers, present and future. The filter also
    goes on `logger` (default root) and its handlers, for records made before this call.
    """
    _install_record_factory()
    target = logger or logging.getLogger()
    if _FILTER not in target.filters:
        target.addFilter(_FILTER)
    for handler in target.handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    # Azure SDK HTTP logging prints headers; keep it at WARNING unless someone asks otherwise.
    http_logger = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    if http_logger.level == logging.NOTSET:
        http_logger.setLevel(logging.WARNING)
    return _FILTER
