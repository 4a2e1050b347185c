"""nsnet never hands user input to a shell.

Checked on the syntax tree, not on the text, so that no spelling escapes: any call with
`shell=True`, `os.system`, `os.popen`, `subprocess.getoutput`/`getstatusoutput`, and any argv
list or tuple that starts with a shell followed by `-c` (`["sh", "-c", x]`, `("/bin/bash", "-c", ...)`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"}
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput")}


def _is_shell(node: ast.expr) -> bool:
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return False
    return node.value.rsplit("/", 1)[-1] in SHELLS


def _dotted(node: ast.expr) -> tuple[str, ...]:
    """`os.system` as ('os', 'system'); `system` alone as ('system',)."""
    if isinstance(node, ast.Attribute):
        return _dotted(node.value) + (node.attr,)
    if isinstance(node, ast.Name):
        return (node.id,)
    return ()


def _imported_shell_calls(tree: ast.AST) -> set[str]:
    """Names bound by `from os import system` (or `popen as p`) and the like."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (node.module, alias.name) in SHELL_CALLS:
                    names.add(alias.asname or alias.name)
    return names


def shell_uses(source: str, filename: str = "<source>") -> list[str]:
    """Every place in the source that runs a shell, as 'line: what'."""
    tree = ast.parse(source, filename)
    imported = _imported_shell_calls(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name[-2:] in SHELL_CALLS or (len(name) == 1 and name[0] in imported):
                found.append(f"{node.lineno}: {'.'.join(name)}()")
            for keyword in node.keywords:
                if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant)
                                                   and keyword.value.value in (False, None)):
                    found.append(f"{node.lineno}: shell={ast.unparse(keyword.value)}")
        if isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) >= 2:
            first, second = node.elts[0], node.elts[1]
            if _is_shell(first) and isinstance(second, ast.Constant) and second.value == "-c":
                found.append(f"{node.lineno}: {ast.unparse(node)[:60]}")
    return sorted(set(found), key=lambda line: int(line.split(":")[0]))


def _sources(*directories: str) -> list[Path]:
    return sorted(path for directory in directories for path in (ROOT / directory).rglob("*.py"))


def test_the_source_trees_are_found():
    assert len(_sources("src/nsnet")) > 20
    assert _sources("benchmarks") and _sources("examples")


@pytest.mark.parametrize("directory", ["src/nsnet", "benchmarks", "examples"])
def test_no_shell_is_ever_invoked(directory):
    offenders = [f"{path.relative_to(ROOT)}:{use}" for path in _sources(directory)
                 for use in shell_uses(path.read_text(), str(path))]
    assert offenders == []


@pytest.mark.parametrize(
    "source, found",
    [
        ("import subprocess\nsubprocess.run(cmd, shell=True)\n", ["2: shell=True"]),
        ("subprocess.Popen(cmd, shell=1)\n", ["1: shell=1"]),
        ("subprocess.Popen(cmd, shell=flag)\n", ["1: shell=flag"]),
        ("import os\nos.system('ls ' + x)\n", ["2: os.system()"]),
        ("os.popen(x).read()\n", ["1: os.popen()"]),
        ("subprocess.getoutput(x)\n", ["1: subprocess.getoutput()"]),
        ("subprocess.getstatusoutput(x)\n", ["1: subprocess.getstatusoutput()"]),
        ("from os import system as run_it\nrun_it(x)\n", ["2: run_it()"]),
        ("subprocess.run(['sh', '-c', x])\n", ["1: ['sh', '-c', x]"]),
        ("subprocess.run(\n    ['bash', '-c', x], check=True)\n", ["2: ['bash', '-c', x]"]),
        ("argv = ('/bin/sh', '-c', x)\n", ["1: ('/bin/sh', '-c', x)"]),
        ("engine.exec(name, ['/usr/bin/dash', '-c', 'exit 3'])\n", ["1: ['/usr/bin/dash', '-c', 'exit 3']"]),
    ],
)
def test_the_checker_finds_every_way_to_run_a_shell(source, found):
    assert shell_uses(source) == found


@pytest.mark.parametrize(
    "source",
    [
        "subprocess.run(['ip', 'link'], shell=False)\n",
        "subprocess.run(['sh', 'script.sh'])\n",
        "subprocess.run(['python3', '-c', code])\n",
        "system = 1\nprint(system)\n",
        "'sh -c' in text\n",
    ],
)
def test_the_checker_passes_what_runs_no_shell(source):
    assert shell_uses(source) == []
