"""A Linux kernel for VM guests in tests: Debian's current linux-image-*-amd64, downloaded with
`apt-get download` and extracted with `dpkg-deb -x` into a cache directory, never installed on the
host. install.sh fetches it (`python tests/integration/guest_kernel.py`, outside the lab: the
lab has no network); tests find it with `cached()` and build the guest's initramfs from it
(virtio's modules, which Debian builds as modules) and busybox-static.

No import of nsnet or of the test package: install.sh runs this file alone.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("NSNET_TEST_CACHE", "/var/cache/nsnet-tests"))
META = "linux-image-amd64"
BUSYBOX = "/bin/busybox"  # busybox-static: no library to copy into the guest
# What a guest needs for a virtio NIC on a Debian kernel; their dependencies come along.
GUEST_MODULES = ("virtio_pci", "virtio_net")


def package_name() -> str:
    """The kernel package linux-image-amd64 depends on now (e.g. linux-image-6.1.0-57-amd64)."""
    out = subprocess.run(["apt-cache", "depends", META], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        name = line.split("Depends:", 1)[1].strip() if "Depends:" in line else ""
        if name.startswith("linux-image-") and name.endswith("-amd64"):
            return name
    raise RuntimeError(f"apt-cache depends {META} names no linux-image-*-amd64")


def fetch() -> Path:
    """Download and extract the kernel package unless the cache holds it; its directory."""
    name = package_name()
    root = CACHE / name
    if (root / "boot").is_dir():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f".{name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    subprocess.run(["apt-get", "download", "-q", name], cwd=work, check=True, stdout=subprocess.DEVNULL)
    (deb,) = work.glob("*.deb")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True)
    _prune(work / "root")
    os.replace(work / "root", root)  # complete or absent: a later run never sees half a package
    shutil.rmtree(work)
    return root


def _prune(root: Path) -> None:
    """Keep the kernel image and the guest's modules (a few MB of the package's 400)."""
    keep = {vmlinuz(root), *load_order(root)}
    for path in sorted(root.rglob("*"), reverse=True):  # children before their directories
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path not in keep:
            path.unlink()


def cached() -> Path | None:
    """The newest extracted kernel in the cache; None when install.sh has not fetched one."""
    found = sorted(p for p in CACHE.glob("linux-image-*-amd64") if (p / "boot").is_dir()) if CACHE.is_dir() else []
    return found[-1] if found else None


def vmlinuz(root: Path) -> Path:
    (image,) = (root / "boot").glob("vmlinuz-*")
    return image


def _modules(root: Path) -> dict[str, Path]:
    modules = {}
    for path in (root / "lib" / "modules").glob("*/kernel/**/*.ko"):
        modules[path.name[:-3].replace("-", "_")] = path
    return modules


def _depends(path: Path) -> list[str]:
    """A module's `depends=` from its .modinfo section (no depmod: the package has no modules.dep)."""
    data = path.read_bytes()
    start = data.find(b"\0depends=")
    if start < 0:
        return []
    value = data[start + 9:data.index(b"\0", start + 1)].decode()
    return [d.replace("-", "_") for d in value.split(",") if d]


def load_order(root: Path, wanted: tuple[str, ...] = GUEST_MODULES) -> list[Path]:
    """The modules to insmod, dependencies first (empty when they are built in)."""
    modules, order = _modules(root), []

    def visit(name: str) -> None:
        if name not in modules or modules[name] in order:
            return  # built in, or done
        for dependency in _depends(modules[name]):
            visit(dependency)
        order.append(modules[name])

    for name in wanted:
        visit(name)
    return order


def _cpio_entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), ino: int = 0) -> bytes:
    """One cpio "newc" entry (the format the kernel unpacks an initramfs from)."""
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    header = b"070701" + b"".join(f"{f:08x}".encode() for f in fields) + name.encode() + b"\0"
    header += b"\0" * (-len(header) % 4)
    return header + data + b"\0" * (-len(data) % 4)


def initramfs(root: Path, init: str) -> bytes:
    """A gzip'd initramfs: busybox, the virtio modules (in load order, listed in /modules), a
    console device, and `init` as /init."""
    modules = load_order(root)
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
        (d, 0o040755, b"", (0, 0)) for d in ("bin", "dev", "proc", "sys", "lib", "tmp")]
    entries += [("dev/console", 0o020600, b"", (5, 1)), ("dev/null", 0o020666, b"", (1, 3)),
                ("bin/busybox", 0o100755, Path(BUSYBOX).read_bytes(), (0, 0)),
                ("bin/sh", 0o120777, b"busybox", (0, 0)),
                ("init", 0o100755, init.encode(), (0, 0)),
                ("modules", 0o100644, "".join(f"/lib/{m.name}\n" for m in modules).encode(), (0, 0))]
    entries += [(f"lib/{m.name}", 0o100644, m.read_bytes(), (0, 0)) for m in modules]
    out = io.BytesIO()
    for ino, (name, mode, data, rdev) in enumerate(entries, 1):
        out.write(_cpio_entry(name, mode, data, rdev, ino))
    out.write(_cpio_entry("TRAILER!!!", 0))
    return gzip.compress(out.getvalue(), compresslevel=1)


if __name__ == "__main__":
    print(f"guest_kernel.py: {fetch()}", file=sys.stderr)
