#!/bin/sh
# Installs everything nsnet needs on Debian 12, as root: the kernel-side tools, libnftables' Python
# binding, and nsnet itself (with its test tools) in ./.venv. Safe to run again.
set -eu
cd "$(dirname "$0")"

# nftables/libnftables1/python3-nftables: the packet filter and its official in-process binding.
# iproute2: `ip`, which the tests use to check the kernel independently of nsnet; iptables (the
# nft backend): the coexistence test installs a foreign iptables rule. conntrack: a test reads the
# connection table. iperf3: the benchmarks.
# python3-venv: a venv made by Debian's python3, with system site packages, can import nftables.
# podman, runc, containernetworking-plugins, busybox-static: the CNI tests run containers through
# nsnet with Podman (runc: crun refuses hybrid cgroups), chain a reference plugin after it, and
# make their image from busybox (no registry is reached).
# python3-yaml: topology files (nsnet up/down/verify) are YAML; PyYAML keeps each value's line.
# graphviz: `nsnet graph --format svg` lays the picture out with its `dot` (and its tests parse the SVG).
# mininet, bridge-utils: benchmarks/topology.py's anchor, Mininet 2.3 with its LinuxBridge switch (brctl);
# without recommends, so no Open vSwitch daemon is installed on the host.
# qemu-system-x86: the tap test boots a real VM guest on a tap endpoint; its initramfs is
# busybox-static and its kernel Debian's, fetched below (never installed).
# openssl: the cluster store's TLS test makes its own CA. iputils-ping: benchmarks/overlay.py's RTT.
packages="nftables libnftables1 python3-nftables python3-venv iproute2 iptables conntrack iperf3 procps
podman runc containernetworking-plugins busybox-static python3-yaml graphviz mininet bridge-utils qemu-system-x86
openssl iputils-ping"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "install.sh: installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# etcd-server, etcd-client (etcd 3.4): the cluster store of overlay networks in the multi-host lab
# (nsnet lab --hosts) and its tests. Downloaded and extracted into /var/cache/nsnet/etcd, never
# installed: the package would enable an etcd service on this machine.
if ! command -v etcd >/dev/null && [ ! -x /var/cache/nsnet/etcd/usr/bin/etcd ]; then
    debs=$(mktemp -d)
    (cd "$debs" && { apt-get download -qq etcd-server etcd-client 2>/dev/null \
        || { apt-get update -qq && apt-get download -qq etcd-server etcd-client; }; })
    mkdir -p /var/cache/nsnet/etcd
    for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" /var/cache/nsnet/etcd; done
    rm -rf "$debs"
fi

if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# The VM guest's kernel for tests/integration/test_tap.py: Debian's current linux-image-*-amd64,
# downloaded and extracted (dpkg-deb -x, pruned to the image and virtio's modules) into
# /var/cache/nsnet-tests. Here and not in the test: the lab the tests run in has no network.
.venv/bin/python tests/integration/guest_kernel.py 2>/dev/null || echo "install.sh: could not fetch the VM guest's kernel (apt-get download); test_tap's QEMU test will fail" >&2
# Byte-compile now: where PYTHONDONTWRITEBYTECODE is set, no run would ever write the cache, and
# every nsnet command would compile its modules again (12-18 ms of a ~45 ms command).
.venv/bin/python -m compileall -q src >/dev/null
echo "install.sh: nsnet is installed in $(pwd)/.venv"
