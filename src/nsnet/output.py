"""Printing for the CLI: aligned tables, JSON, and Docker-style `{{.Field}}` templates."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

_FIELD = re.compile(r"\{\{\s*((?:\.[A-Za-z0-9_-]+)+|\.)\s*\}\}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2)


def template(fmt: str, data: dict[str, Any]) -> str:
    """Fill `{{.A.B}}` fields from data, as `docker inspect --format` does for simple paths."""

    def lookup(match: re.Match[str]) -> str:
        value: Any = data
        for key in match.group(1).strip(".").split(".") if match.group(1) != "." else []:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return ""
        # JSON spelling for everything but strings, as Docker prints `true`, not `True`.
        return value if isinstance(value, str) else json.dumps(value)

    return _FIELD.sub(lookup, fmt)
