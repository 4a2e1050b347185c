"""The paths nsnet writes and removes: /etc/netns/NAME (a temporary directory stands in for
/etc/netns), the state directory and its database, and how errors about files read.

nsnet must follow no symbolic link it did not make, remove no file it did not write, and refuse
in one line when a path it needs is taken.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from nsnet.engine import Engine
from nsnet.errors import Conflict, KernelError, NsnetError, PathError
from nsnet.kernel import netns
from nsnet.kernel.fake import FakeKernel
from nsnet.store import Store

HOSTS = "127.0.0.1\tlocalhost\n"


def tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under root, links unfollowed: kind, mode and content (or link target)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            status = path.lstat()
            if path.is_symlink():
                found[str(path.relative_to(root))] = ("link", 0, os.readlink(path))
            elif path.is_dir():
                found[str(path.relative_to(root))] = ("dir", stat.S_IMODE(status.st_mode), "")
            else:
                found[str(path.relative_to(root))] = ("file", stat.S_IMODE(status.st_mode), path.read_text())
    return found


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """Stands in for /etc/netns."""
    return tmp_path / "etc-netns"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory nsnet must never touch, with files a link could lead it to."""
    directory = tmp_path / "victim"
    directory.mkdir()
    (directory / "hosts").write_text("the victim's hosts\n")
    (directory / "passwd").write_text("root:x:0:0\n")
    return directory


# Writing


def test_write_makes_the_directory_and_the_files(base: Path) -> None:
    netns.write_etc_files("web", {"hosts": HOSTS}, base=str(base))

    assert tree(base) == {"web": ("dir", 0o755, ""), "web/hosts": ("file", 0o644, HOSTS)}


def test_write_makes_only_the_files_nsnet_owns(base: Path) -> None:
    with pytest.raises(ValueError):
        netns.write_etc_files("web", {"passwd": "x"}, base=str(base))
    assert not base.exists()


@pytest.mark.parametrize("kind", ["dir", "dir with hosts", "file", "link", "dangling link"])
def test_write_refuses_a_name_that_is_taken_and_changes_nothing(base: Path, victim: Path, kind: str) -> None:
    base.mkdir()
    taken = base / "web"
    if kind.startswith("dir"):
        taken.mkdir()
        if kind == "dir with hosts":
            (taken / "hosts").write_text("the user's hosts\n")
    elif kind == "file":
        taken.write_text("a file\n")
    else:
        taken.symlink_to(victim if kind == "link" else base / "nowhere")
    before = tree(base.parent)

    with pytest.raises(PathError) as caught:
        netns.write_etc_files("web", {"hosts": HOSTS}, base=str(base))

    assert str(caught.value) == f"cannot create {taken}: file exists"
    assert caught.value.errno == errno.EEXIST
    assert tree(base.parent) == before


def test_write_refuses_a_base_directory_that_is_a_link(base: Path, victim: Path) -> None:
    base.symlink_to(victim)
    before = tree(base.parent)

    with pytest.raises(PathError) as caught:
        netns.write_etc_files("web", {"hosts": HOSTS}, base=str(base))

    assert str(caught.value) == f"cannot use {base}: it is a symbolic link, and nsnet follows no link it did not make"
    assert tree(base.parent) == before


def test_a_failed_write_leaves_only_what_was_there(base: Path) -> None:
    base.mkdir()
    (base / "other").mkdir()
    before = tree(base)

    with pytest.raises(UnicodeEncodeError):  # fails after the directory and the file were made
        netns.write_etc_files("web", {"hosts": "\udc80"}, base=str(base))

    assert tree(base) == before


# Removing


def test_remove_takes_away_what_write_made(base: Path) -> None:
    netns.write_etc_files("web", {"hosts": HOSTS}, base=str(base))
    netns.remove_etc_files("web", base=str(base))

    assert tree(base) == {}


def test_remove_keeps_what_a_user_added_and_the_directory_holding_it(base: Path) -> None:
    netns.write_etc_files("web", {"hosts": HOSTS}, base=str(base))
    (base / "web" / "nsswitch.conf").write_text("hosts: files\n")
    (base / "web" / "sub").mkdir()
    (base / "web" / "sub" / "f").write_text("kept\n")
    added = {path: entry for path, entry in tree(base).items() if path != "web/hosts"}

    netns.remove_etc_files("web", base=str(base))

    assert tree(base) == added
    assert sorted(added) == ["web", "web/nsswitch.conf", "web/sub", "web/sub/f"]


def test_remove_leaves_a_link_in_place_of_a_file_and_its_target(base: Path, victim: Path) -> None:
    netns.write_etc_files("web", {"hosts": HOSTS}, base=str(base))
    (base / "web" / "hosts").unlink()
    (base / "web" / "hosts").symlink_to(victim / "hosts")
    before = tree(base.parent)

    netns.remove_etc_files("web", base=str(base))

    assert tree(base.parent) == before


def test_remove_leaves_a_directory_in_place_of_a_file(base: Path) -> None:
    (base / "web" / "hosts").mkdir(parents=True)
    before = tree(base)

    netns.remove_etc_files("web", base=str(base))

    assert tree(base) == before


@pytest.mark.parametrize("where", ["name", "base"])
def test_remove_follows_no_link(base: Path, victim: Path, where: str) -> None:
    if where == "name":
        base.mkdir()
        (base / "web").symlink_to(victim)
    else:
        base.symlink_to(victim)
        (victim / "web").mkdir()
        (victim / "web" / "hosts").write_text("reached through a link\n")
    before = tree(base.parent)

    netns.remove_etc_files("web", base=str(base))

    assert tree(base.parent) == before


def test_remove_of_what_is_not_there_is_done(base: Path) -> None:
    netns.remove_etc_files("web", base=str(base))
    base.mkdir()
    netns.remove_etc_files("web", base=str(base))
    assert tree(base) == {}


# Taken paths


def test_paths_taken_counts_anything_there_even_a_dangling_link(tmp_path: Path) -> None:
    run, etc = tmp_path / "run", tmp_path / "etc"
    run.mkdir()
    etc.mkdir()
    assert netns.paths_taken("web", str(run), str(etc)) == []

    (run / "web").symlink_to(tmp_path / "nowhere")
    (etc / "web").mkdir()
    assert netns.paths_taken("web", str(run), str(etc)) == [str(run / "web"), str(etc / "web")]


@pytest.mark.parametrize("taken", ["/etc/netns/web", "/run/netns/web"])
def test_create_refuses_a_taken_path_before_changing_anything(tmp_path: Path, taken: str) -> None:
    kernel = FakeKernel()
    kernel.foreign_paths.add(taken)
    with Engine(state_dir=str(tmp_path / "state"), kernel=kernel) as engine:
        with pytest.raises(Conflict) as caught:
            engine.create_sandbox("web", networks=[])
        assert str(caught.value) == f"sandbox 'web': {taken} exists and is not nsnet's; remove it or choose another name"
        assert engine.sandboxes() == []
    assert kernel.calls == []


# The state directory


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_new_state_directory_and_database_are_private(tmp_path: Path) -> None:
    Store(str(tmp_path / "a" / "state")).close()

    assert mode(tmp_path / "a" / "state") == 0o700
    assert mode(tmp_path / "a" / "state" / "state.db") == 0o600


def test_an_empty_state_directory_of_ours_is_made_private(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o755)
    Store(str(tmp_path / "state")).close()
    assert mode(tmp_path / "state") == 0o700


def test_a_state_directory_that_others_can_enter_and_holds_files_is_refused_unchanged(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    (shared / "passwd").write_text("root:x:0:0\n")

    with pytest.raises(NsnetError) as caught:
        Store(str(shared))

    assert str(caught.value) == (f"cannot use {shared} as the state directory: its mode 0755 lets others in;"
                                 " nsnet keeps its state private (0700): choose a new or an empty directory")
    assert mode(shared) == 0o755
    assert os.listdir(shared) == ["passwd"]


def test_a_state_directory_that_is_a_link_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    (tmp_path / "state").symlink_to(target)

    with pytest.raises(NsnetError) as caught:
        Store(str(tmp_path / "state"))

    assert str(caught.value) == (f"cannot use {tmp_path / 'state'} as the state directory: it is a symbolic link,"
                                 " and nsnet follows no link it did not make")
    assert mode(target) == 0o755
    assert os.listdir(target) == []


def test_a_state_database_that_is_a_link_is_refused(tmp_path: Path, victim: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "state.db").symlink_to(victim / "passwd")
    before = tree(victim)

    with pytest.raises(NsnetError) as caught:
        Store(str(state))

    assert str(caught.value) == (f"cannot open the state in {state}: {state / 'state.db'} is a symbolic link,"
                                 " and nsnet follows no link it did not make")
    assert tree(victim) == before


# How errors about files read


def test_errors_about_files_name_the_file_not_the_kernel() -> None:
    error = PathError("create", "/run/netns/x", errno.EEXIST)

    assert str(error) == "cannot create /run/netns/x: file exists"
    assert isinstance(error, KernelError)
    assert (error.operation, error.path, error.errno, error.gone) == ("create", "/run/netns/x", errno.EEXIST, False)
    assert PathError("delete", "/run/netns/x", errno.ENOENT).gone


def test_refusals_of_netlink_and_nftables_still_say_kernel_refused() -> None:
    assert str(KernelError("creation of bridge br0", errno.EEXIST)) == (
        "kernel refused creation of bridge br0: File exists (EEXIST)")
    assert str(KernelError("nftables transaction", errno.ENOENT, "No such file or directory")) == (
        "kernel refused nftables transaction: No such file or directory (ENOENT)")


# Replacing one file (a sandbox's resolv.conf follows its networks)


def test_replace_puts_new_text_in_one_step_and_removes_with_none(base: Path) -> None:
    netns.write_etc_files("web", {"hosts": HOSTS, "resolv.conf": "nameserver 10.31.0.1\n"}, base=str(base))
    netns.replace_etc_file("web", "resolv.conf", "nameserver 10.32.0.1\n", base=str(base))
    assert tree(base)["web/resolv.conf"] == ("file", 0o644, "nameserver 10.32.0.1\n")
    assert sorted(tree(base)) == ["web", "web/hosts", "web/resolv.conf"]  # no temporary file left
    netns.replace_etc_file("web", "resolv.conf", None, base=str(base))
    assert sorted(tree(base)) == ["web", "web/hosts"]
    with pytest.raises(ValueError, match="not among the files nsnet owns"):
        netns.replace_etc_file("web", "passwd", "x", base=str(base))


def test_replace_writes_through_no_link(base: Path, victim: Path) -> None:
    netns.write_etc_files("web", {"hosts": HOSTS}, base=str(base))
    (base / "web" / "resolv.conf").symlink_to(victim / "hosts")
    outside = tree(victim)

    netns.replace_etc_file("web", "resolv.conf", "nameserver 10.31.0.1\n", base=str(base))  # the link is replaced
    assert tree(victim) == outside and tree(base)["web/resolv.conf"][0] == "file"
    (base / "web" / "resolv.conf").unlink()
    (base / "web" / "resolv.conf").symlink_to(victim / "hosts")
    netns.replace_etc_file("web", "resolv.conf", None, base=str(base))  # a link is not nsnet's to remove
    assert tree(victim) == outside and (base / "web" / "resolv.conf").is_symlink()

    (base / "other").symlink_to(victim)  # a link in place of the sandbox's directory
    with pytest.raises(PathError) as caught:
        netns.replace_etc_file("other", "resolv.conf", "nameserver 10.31.0.1\n", base=str(base))
    assert caught.value.errno == errno.ELOOP and tree(victim) == outside
