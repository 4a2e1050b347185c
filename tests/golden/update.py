"""Rewrite the golden files of tests/unit/test_render.py from the current rendering.

Run by hand after an intended change to the rules, then review the diff before committing:

    .venv/bin/python tests/golden/update.py
    git diff tests/golden

The test itself only ever reads these files.
"""

from __future__ import annotations

import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "unit"


def main() -> int:
    sys.path.insert(0, str(UNIT))
    from test_render import CASES, GOLDEN, dump

    for name, commands in CASES.items():
        path = GOLDEN / f"{name}.json"
        text = dump(commands())
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"updated {path.relative_to(GOLDEN.parent.parent)}")
    stale = sorted(p.name for p in GOLDEN.glob("*.json") if p.stem not in CASES)
    for name in stale:
        print(f"no case renders {name}: delete it if it is obsolete", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
