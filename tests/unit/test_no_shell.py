"""nsnet never hands user input to a shell: no shell=True, os.system or os.popen anywhere."""

import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src" / "nsnet"


def test_no_shell_is_ever_invoked():
    offenders = [
        f"{path.relative_to(SOURCE)}:{number}"
        for path in sorted(SOURCE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(|/bin/sh -c", line)
    ]
    assert list(SOURCE.rglob("*.py")), "the source tree was not found"
    assert offenders == []
