"""Paths nsnet writes and removes, through the CLI: it follows no symbolic link it did not make,
removes no file it did not write, and refuses in one line, changing nothing, when a path it needs
is taken. /etc/netns and /run/netns are the lab's private tmpfs mounts."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nsnet import Engine

from .conftest import NSNET, cli

ETC = Path("/etc/netns")


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under root, byte for byte, links unfollowed."""
    found: dict[str, tuple] = {".": ("dir", stat.S_IMODE(root.lstat().st_mode))}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            mode = stat.S_IMODE(path.lstat().st_mode)
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            content = os.readlink(path) if kind == "link" else path.read_bytes() if kind == "file" else b""
            found[str(path.relative_to(root))] = (kind, mode, content)
    return found


@pytest.fixture
def etc_netns() -> Iterator[Path]:
    """/etc/netns, emptied again after the test of what the test put there."""
    ETC.mkdir(exist_ok=True)
    before = set(os.listdir(ETC))
    yield ETC
    for name in set(os.listdir(ETC)) - before:
        path = ETC / name
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    directory = tmp_path / "victim"
    directory.mkdir()
    (directory / "hosts").write_bytes(b"10.0.0.1 the-victim's-own-hosts\n")
    (directory / "passwd").write_bytes(b"root:x:0:0:root:/root:/bin/sh\n")
    return directory


@pytest.fixture
def app(state_dir: str, engine: Engine) -> str:
    assert cli("network", "create", "app", "--subnet", "10.31.0.0/24").returncode == 0
    return "app"


def sandboxes() -> list[str]:
    return cli("ps", "-q").stdout.split()


def test_create_refuses_a_link_at_etc_netns_name_and_leaves_its_target_untouched(
        app: str, etc_netns: Path, victim: Path) -> None:
    (etc_netns / "web").symlink_to(victim)
    before = tree(victim)

    result = cli("create", "web", "--network", app)

    assert (result.returncode, result.stderr) == (1, "nsnet: error: sandbox 'web': /etc/netns/web exists and is"
                                                     " not nsnet's; remove it or choose another name\n")
    assert tree(victim) == before
    assert os.readlink(etc_netns / "web") == str(victim)
    assert sandboxes() == []
    assert not os.path.lexists("/run/netns/web")


def test_create_refuses_a_users_own_etc_netns_directory_and_leaves_it_untouched(
        app: str, etc_netns: Path) -> None:
    (etc_netns / "web").mkdir()
    (etc_netns / "web" / "hosts").write_bytes(b"192.0.2.7 the-user's-host\n")
    before = tree(etc_netns / "web")

    result = cli("create", "web", "--network", app)

    assert (result.returncode, result.stderr) == (1, "nsnet: error: sandbox 'web': /etc/netns/web exists and is"
                                                     " not nsnet's; remove it or choose another name\n")
    assert tree(etc_netns / "web") == before
    assert sandboxes() == []


def test_create_refuses_a_link_at_run_netns_name(app: str, etc_netns: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "nowhere", "/run/netns/web")
    try:
        result = cli("create", "web", "--network", app)

        assert (result.returncode, result.stderr) == (1, "nsnet: error: sandbox 'web': /run/netns/web exists and is"
                                                         " not nsnet's; remove it or choose another name\n")
        assert os.readlink("/run/netns/web") == str(tmp_path / "nowhere")
        assert not os.path.lexists(etc_netns / "web")
        assert sandboxes() == []
    finally:
        os.unlink("/run/netns/web")


def test_rm_keeps_what_a_user_added_under_etc_netns_and_still_removes_the_sandbox(
        app: str, etc_netns: Path) -> None:
    assert cli("create", "web", "--network", app).returncode == 0
    assert (etc_netns / "web" / "hosts").is_file() and (etc_netns / "web" / "resolv.conf").is_file()
    (etc_netns / "web" / "nsswitch.conf").write_bytes(b"hosts: files\n")
    (etc_netns / "web" / "extra").mkdir()
    (etc_netns / "web" / "extra" / "notes").write_bytes(b"mine\n")
    added = {p: e for p, e in tree(etc_netns / "web").items() if p not in ("hosts", "resolv.conf")}

    result = cli("rm", "web")

    assert (result.returncode, result.stderr) == (0, "")
    assert sandboxes() == []
    assert not os.path.lexists("/run/netns/web")
    assert tree(etc_netns / "web") == added


def test_rm_follows_no_link_put_in_place_of_the_sandboxs_etc_directory(
        app: str, etc_netns: Path, victim: Path) -> None:
    assert cli("create", "web", "--network", app).returncode == 0
    shutil.rmtree(etc_netns / "web")
    (etc_netns / "web").symlink_to(victim)
    before = tree(victim)

    result = cli("rm", "web")

    assert (result.returncode, result.stderr) == (0, "")
    assert sandboxes() == []
    assert tree(victim) == before
    assert os.readlink(etc_netns / "web") == str(victim)


def nsnet_with_state_dir(path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NSNET_STATE_DIR": str(path)}
    return subprocess.run([NSNET, *args], capture_output=True, text=True, timeout=60, env=env)


def test_a_state_directory_that_is_a_link_is_refused_and_its_target_unchanged(tmp_path: Path, victim: Path) -> None:
    victim.chmod(0o755)
    (tmp_path / "state").symlink_to(victim)
    before = tree(victim)

    result = nsnet_with_state_dir(tmp_path / "state", "ps")

    assert (result.returncode, result.stderr) == (
        1, f"nsnet: error: cannot use {tmp_path}/state as the state directory: it is a symbolic link,"
           " and nsnet follows no link it did not make\n")
    assert tree(victim) == before


def test_a_state_directory_others_can_enter_is_refused_and_its_mode_unchanged(tmp_path: Path, victim: Path) -> None:
    victim.chmod(0o755)
    before = tree(victim)

    result = nsnet_with_state_dir(victim, "ps")

    assert (result.returncode, result.stderr) == (
        1, f"nsnet: error: cannot use {victim} as the state directory: its mode 0755 lets others in;"
           " nsnet keeps its state private (0700): choose a new or an empty directory\n")
    assert tree(victim) == before


def test_exec_binds_nothing_through_a_link_in_place_of_the_sandboxs_etc_directory(
        app: str, etc_netns: Path, victim: Path) -> None:
    assert cli("create", "web", "--network", app).returncode == 0
    ours = (etc_netns / "web" / "hosts").read_text()
    assert cli("exec", "web", "cat", "/etc/hosts").stdout == ours  # bound over /etc/hosts
    shutil.rmtree(etc_netns / "web")
    (etc_netns / "web").symlink_to(victim)

    result = cli("exec", "web", "cat", "/etc/hosts")

    assert result.returncode == 0
    assert result.stdout == Path("/etc/hosts").read_text()
