"""A logging filter that removes secrets (SAS signatures, account keys, bearer tokens) from log records.

Every entry point calls `install_redaction()` once; the filter sits on the root logger's
handlers so records from any library are cleaned before they are written.
"""

from __future__ import annotations

import logging
import re

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # SAS signature in a query string or a bare token: sig=...
    (re.compile(r"(?i)(\bsig=)[^&\s\"'<>;,]+"), r"\1REDACTED"),
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


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Attach the redacting filter to `logger` (default root) and all its handlers; idempotent.

    Filters on a logger do not see records propagated from child loggers, so the filter goes on
    the handlers too; call again after adding handlers (e.g. after logging.basicConfig).
    """
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
