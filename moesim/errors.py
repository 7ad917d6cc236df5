"""The one exception type for user mistakes.

Anything a user can get wrong (a malformed trace, an unknown policy, a profile with a bare number)
raises `UserError`; the CLI prints its message on one line and exits 1. Any other exception is a
bug in moesim and exits 2 with a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters written as escapes (a column name read
    from a broken file can hold a newline; the message must still be one line)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class UserError(Exception):
    """A mistake in the user's input, reported as one line naming the file, row or field.

    `where` is the file (and row or field) the problem is in; it prefixes the message.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = one_line(where) if where else where
        self.message = one_line(message)
        super().__init__(f"{self.where}: {self.message}" if self.where else self.message)

    def located(self, where: str) -> "UserError":
        """The same error with `where` prefixed (e.g. a file name added by an outer loader)."""
        inner = f"{where}: {self.where}" if self.where else where
        return UserError(self.message, inner)
