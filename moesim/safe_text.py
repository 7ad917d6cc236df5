"""Names from users' files, made safe for where they are printed.

A trace, policy or profile name is text someone else may have written: printed raw it can move
the terminal's cursor or recolour it (ANSI escape codes), or break a Markdown table and inject
markup. The CLI passes every text line through `terminal_text` (moesim.cli.emit and its error
line) and the Markdown report passes every cell through `markdown_cell`. HTML is escaped by
html.escape in the report itself.
"""

from __future__ import annotations

import re

# C0 and C1 control characters except newline and tab, and DEL
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def terminal_text(text: str) -> str:
    """`text` with control characters (ESC, BEL, CR, ...) shown as \\xNN instead of acted on."""
    return _CONTROL.sub(_escape, text)


def markdown_cell(text: str) -> str:
    """`text` as one Markdown table cell: on one line, no column break, no markup or HTML."""
    text = terminal_text(text).replace("\r", " ").replace("\n", " ").replace("\t", " ")
    text = text.replace("<", "&lt;").replace(">", "&gt;")  # no raw HTML
    return re.sub(r"([|`\[\]])", r"\\\1", text)  # no column break, code span or link


def markdown_line(text: str) -> str:
    """`text` as the body of one Markdown line (a title, a bullet): markup and HTML escaped."""
    return markdown_cell(text).replace("\\|", "|")
