"""Printing for the CLI: aligned tables, JSON, and Docker-style `{{.Field}}` templates.

Templates are strict, as Go's are for struct fields: a field the object does not have is an
error naming it, and syntax beyond `{{.A.B}}`, `{{.}}` and `{{json .A.B}}` is refused rather
than printed literally. A template is compiled before anything is printed, so a typo fails
before the first line of output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from .errors import InvalidInput
from .record import record

_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PATH = r"(\.|(?:\.[A-Za-z0-9_-]+)+)"
_FIELD = re.compile(rf"\s*{_PATH}\s*\Z")
_JSON = re.compile(rf"\s*json\s+{_PATH}\s*\Z")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2)


@record
class _Action:
    path: tuple[str, ...]  # () is `.`, the whole object
    as_json: bool


class Template:
    """A compiled `--format` template: literal text and actions, in order."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._parts: list[str | _Action] = []
        position = 0
        for match in _ACTION.finditer(fmt):
            self._literal(fmt[position:match.start()])
            self._parts.append(self._action(match.group(1)))
            position = match.end()
        self._literal(fmt[position:])

    def _error(self, reason: str) -> InvalidInput:
        return InvalidInput("format", self.fmt, reason)

    def _literal(self, text: str) -> None:
        if "{{" in text:
            raise self._error("'{{' is not closed by '}}'")
        if "}}" in text:
            raise self._error("'}}' closes no '{{'")
        self._parts.append(text)

    def _action(self, inner: str) -> _Action:
        for pattern, to_json in ((_FIELD, False), (_JSON, True)):
            match = pattern.match(inner)
            if match:
                path = match.group(1)
                return _Action(tuple(path.split(".")[1:]) if path != "." else (), to_json)
        raise self._error(f"unsupported template syntax '{{{{{inner}}}}}' (supported: {{{{.Field.Sub}}}},"
                          " {{.}} and {{json .Field}})")

    def render(self, data: Any) -> str:
        return "".join(part if isinstance(part, str) else self._value(part, data) for part in self._parts)

    def _value(self, action: _Action, data: Any) -> str:
        value = data
        for depth, key in enumerate(action.path, 1):
            if not isinstance(value, dict) or key not in value:
                raise self._error(f"no field .{'.'.join(action.path[:depth])}")
            value = value[key]
        if action.as_json:
            return json.dumps(value)
        if value is None:
            return ""
        # JSON spelling for everything but strings, as Docker prints `true`, not `True`.
        return value if isinstance(value, str) else json.dumps(value)


def template(fmt: str, data: Any) -> str:
    """Fill `{{.A.B}}` fields from data, as `docker inspect --format` does for simple paths."""
    return Template(fmt).render(data)
