"""One exception type for problems the user can fix: the CLI prints its message as one line."""

from __future__ import annotations


class CliError(Exception):
    """A user-fixable problem. The message says what is wrong and how to fix it (no traceback)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
