"""The one exception type for user mistakes.

Anything a user can get wrong (a malformed trace, an unknown policy, a profile with a bare number)
raises `UserError`; the CLI prints its message on one line and exits 1. Any other exception is a
bug in moesim and exits 2 with a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2


class UserError(Exception):
    """A mistake in the user's input, reported as one line naming the file, row or field.

    `where` is the file (and row or field) the problem is in; it prefixes the message.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)

    def located(self, where: str) -> "UserError":
        """The same error with `where` prefixed (e.g. a file name added by an outer loader)."""
        inner = f"{where}: {self.where}" if self.where else where
        return UserError(self.message, inner)
