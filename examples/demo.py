"""The bridge model end to end, each step checked with real traffic. Run it in an isolated host:

    .venv/bin/nsnet lab -- .venv/bin/python examples/demo.py

It types the same `nsnet` commands a user would, then proves each promise: an HTTP exchange
between sandboxes, the source address a peer on the "outside" saw (masquerade), a published port
reached from outside and by hairpin, isolation, a live connect/disconnect, a sandbox that cannot
pass for another, an internal network that reaches neither the outside nor the host, a dual-stack
network (IPv6 egress through NAT66, a port published on the host's IPv6 address), a one-shot
`run`, names, a service (spread, published on the host, client-IP affinity), a sidecar's
interception, nsnet as the CNI plugin of a container runtime (ADD with a published port, DEL), a
link between two sandboxes, a sandbox in another's namespace, a whole lab from a file (up, verify,
shaping, a picture, down), and a teardown that leaves nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nsnet.lab import isolation_problem

NSNET = str(Path(sys.executable).with_name("nsnet"))
PYTHON = sys.executable
WAN_HOST, WAN_PEER = "198.51.100.1", "198.51.100.2"
WAN6_HOST, WAN6_PEER = "2001:db8:100::1", "2001:db8:100::2"
started: list[subprocess.Popen] = []
# A sidecar proxy, run as uid 1337: answers one HTTP request with where it was going.
SIDECAR = r"""
import socket, struct
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 15001))
server.listen(1)
print("ready", flush=True)
conn, _ = server.accept()
raw = conn.getsockopt(socket.SOL_IP, 80, 16)  # SO_ORIGINAL_DST
where = f"{socket.inet_ntoa(raw[4:8])}:{struct.unpack('!H', raw[2:4])[0]}"
conn.recv(4096)
conn.sendall(f"HTTP/1.0 200 OK\r\n\r\nproxied to {where}".encode())
conn.close()
"""
made: list[str] = []  # temporary directories, removed at the end


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m")


def sh(*argv: str, show: bool = True, check: bool = True) -> str:
    if show:
        print("$ " + " ".join(shlex.quote(a) for a in (["nsnet", *argv[1:]] if argv[0] == NSNET else argv)))
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"demo: failed: {' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def nsnet(*args: str, show: bool = True) -> str:
    return sh(NSNET, *args, show=show)


def proved(claim: str, ok: bool) -> None:
    print(f"  {'ok' if ok else 'FAILED'}: {claim}")
    if not ok:
        raise SystemExit(f"demo: the check failed: {claim}")


def http_server(where: list[str], ip: str, port: int) -> subprocess.Popen:
    """python's http.server in a namespace; its log on stderr names each client's address."""
    process = subprocess.Popen([*where, PYTHON, "-u", "-m", "http.server", str(port), "--bind", ip],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started.append(process)
    return process


def fetch_from(where: list[str], url: str, tries: int = 20) -> bool:
    """GET url from inside a namespace; retried briefly while a server starts."""
    code = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=1).read()"
    for _ in range(tries):
        if subprocess.run([*where, PYTHON, "-c", code], capture_output=True).returncode == 0:
            return True
        time.sleep(0.1)
    return False


def fetch(sandbox: str, url: str, tries: int = 20) -> bool:
    return fetch_from([NSNET, "exec", sandbox, "--"], url, tries)


def client_log(server: subprocess.Popen) -> list[str]:
    """The client addresses the server logged, once it is stopped."""
    server.terminate()
    _, log = server.communicate(timeout=5)
    return [line.split()[0] for line in log.splitlines() if '"GET ' in line]


def client_seen_by(server: subprocess.Popen) -> str:
    return (client_log(server) or ["nothing"])[0]


def make_wan() -> None:
    """Another machine on the host's 'outside' link; it has no route to any sandbox subnet."""
    for argv in (
        ["ip", "netns", "add", "wan"],
        ["ip", "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", "wan"],
        ["sysctl", "-qw", "net.ipv6.conf.wan0.accept_dad=0"],
        ["ip", "netns", "exec", "wan", "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"],
        ["ip", "addr", "add", f"{WAN_HOST}/24", "dev", "wan0"],
        ["ip", "addr", "add", f"{WAN6_HOST}/64", "dev", "wan0"],
        ["ip", "link", "set", "wan0", "up"],
        ["ip", "-n", "wan", "addr", "add", f"{WAN_PEER}/24", "dev", "eth0"],
        ["ip", "-n", "wan", "addr", "add", f"{WAN6_PEER}/64", "dev", "eth0"],
        ["ip", "-n", "wan", "link", "set", "eth0", "up"],
        ["ip", "-n", "wan", "link", "set", "lo", "up"],
    ):
        sh(*argv, show=False)


def main() -> None:
    problem = isolation_problem()
    if problem is not None:
        raise SystemExit(f"demo: run me in an isolated host ({problem}):"
                         " .venv/bin/nsnet lab -- .venv/bin/python examples/demo.py")
    make_wan()
    print(f"An isolated host: a private network namespace with `lo`, plus `wan0` ({WAN_HOST}, {WAN6_HOST})")
    print(f"leading to a machine 'wan' ({WAN_PEER}, {WAN6_PEER}) that stands for the outside world.")

    step("1. A network: a bridge holding the gateway address, forwarding on, NAT rules")
    nsnet("network", "create", "app", "--subnet", "10.31.0.0/24")
    bridge = nsnet("network", "inspect", "app", "--format", "{{.Bridge}}", show=False).strip()
    print(sh("ip", "-brief", "address", "show", "dev", bridge).rstrip())
    proved(f"bridge {bridge} holds 10.31.0.1/24", "10.31.0.1/24" in sh("ip", "-brief", "address", "show", bridge,
                                                                         show=False))
    proved("net.ipv4.ip_forward = 1", Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1")

    step("2. Sandboxes: a named netns each, a veth pair to the bridge, an address, a default route")
    nsnet("create", "web", "--network", "app")
    nsnet("create", "client", "--network", "app")
    print(nsnet("ps").rstrip())
    print(nsnet("exec", "client", "--", "ip", "route").rstrip())
    proved("client's default route goes via the gateway 10.31.0.1",
           "default via 10.31.0.1 dev eth0" in nsnet("exec", "client", "--", "ip", "route", show=False))

    step("3. Sandbox to sandbox, over the bridge")
    server = http_server([NSNET, "exec", "web", "--"], "10.31.0.2", 8000)
    print("$ nsnet exec web -- python3 -m http.server 8000 &")
    print("$ nsnet exec client -- curl http://10.31.0.2:8000/")
    proved("client fetched a page from web", fetch("client", "http://10.31.0.2:8000/"))
    proved("web saw the request come from client's own address 10.31.0.3", client_seen_by(server) == "10.31.0.3")

    step("4. Egress through masquerade")
    server = http_server(["ip", "netns", "exec", "wan"], WAN_PEER, 8080)
    print(f"$ nsnet exec web -- curl http://{WAN_PEER}:8080/     (a server on the 'wan' machine)")
    proved("web reached the outside", fetch("web", f"http://{WAN_PEER}:8080/"))
    seen = client_seen_by(server)
    proved(f"the outside saw the host's address {WAN_HOST}, not the sandbox's (it saw {seen})", seen == WAN_HOST)

    step("5. A published port: the outside reaches a sandbox through the host")
    nsnet("create", "api", "--network", "app", "-p", "8080:8000")
    print(nsnet("port", "api").rstrip())
    server = http_server([NSNET, "exec", "api", "--"], "10.31.0.4", 8000)
    print(f"$ curl http://{WAN_HOST}:8080/     (from the 'wan' machine)")
    proved("wan fetched a page from api through the host's port 8080",
           fetch_from(["ip", "netns", "exec", "wan"], f"http://{WAN_HOST}:8080/"))
    proved("client reached it too, through the host's address (hairpin)", fetch("client", f"http://{WAN_HOST}:8080/"))
    seen = client_log(server)
    proved(f"api saw the outside's own address {WAN_PEER} (DNAT keeps it), then the gateway for the hairpin",
           seen == [WAN_PEER, "10.31.0.1"])

    step("6. Networks are isolated from each other")
    nsnet("network", "create", "other", "--subnet", "10.32.0.0/24")
    nsnet("create", "x", "--network", "other")
    server = http_server([NSNET, "exec", "web", "--"], "10.31.0.2", 8001)
    proved("x (network other) cannot reach web (network app)", not fetch("x", "http://10.31.0.2:8001/", tries=2))

    step("7. Connect and disconnect, live")
    nsnet("connect", "app", "x")
    proved("once connected to app, x reaches web", fetch("x", "http://10.31.0.2:8001/"))
    nsnet("disconnect", "app", "x")
    proved("after disconnect, it cannot", not fetch("x", "http://10.31.0.2:8001/", tries=2))
    client_seen_by(server)

    step("8. No sandbox can pass for another")
    web_mac = nsnet("inspect", "web", "--format", "{{.Networks.app.MacAddress}}", show=False).strip()
    client_mac = nsnet("inspect", "client", "--format", "{{.Networks.app.MacAddress}}", show=False).strip()
    server = http_server([NSNET, "exec", "web", "--"], "10.31.0.2", 8002)
    nsnet("exec", "client", "--", "ip", "link", "set", "eth0", "address", web_mac)
    proved(f"client, wearing web's MAC {web_mac}, reaches nothing: its port is locked to its own MAC",
           not fetch("client", "http://10.31.0.2:8002/", tries=2))
    proved("and web's MAC stayed on web's port: api still reaches web",
           fetch("api", "http://10.31.0.2:8002/"))
    nsnet("exec", "client", "--", "ip", "link", "set", "eth0", "address", client_mac)
    proved("with its own MAC back, client reaches web again", fetch("client", "http://10.31.0.2:8002/"))
    client_seen_by(server)

    step("9. An internal network: no way out, not even to the host")
    nsnet("network", "create", "sealed", "--internal")
    nsnet("create", "vault", "--network", "sealed")
    print(nsnet("exec", "vault", "--", "ip", "route").rstrip())
    proved("vault has no default route", "default" not in nsnet("exec", "vault", "--", "ip", "route", show=False))
    server = http_server(["ip", "netns", "exec", "wan"], WAN_PEER, 8081)
    proved("vault cannot reach the outside", not fetch("vault", f"http://{WAN_PEER}:8081/", tries=2))
    client_seen_by(server)
    sealed_gateway = nsnet("network", "inspect", "sealed", "--format", "{{.Gateway}}", show=False).strip()
    server = http_server([], "0.0.0.0", 8082)
    print("$ python3 -m http.server 8082 &     (a service of the host, on every address)")
    proved(f"vault cannot reach the host's services through its gateway {sealed_gateway}",
           not fetch("vault", f"http://{sealed_gateway}:8082/", tries=2))
    proved("while web (a regular network) can, through its own", fetch("web", "http://10.31.0.1:8082/"))
    client_seen_by(server)

    step("10. Dual stack: IPv6 beside IPv4, NAT66 out, a port published on IPv6 too")
    nsnet("network", "create", "dual", "--ipv6", "--subnet", "10.33.0.0/24", "--subnet", "fd00:33::/64")
    nsnet("create", "six", "--network", "dual", "-p", "8090:8000")
    print(nsnet("exec", "six", "--", "ip", "-brief", "address", "show", "eth0").rstrip())
    print(nsnet("port", "six").rstrip())
    proved("six has an address in each family, and a default route in each",
           nsnet("inspect", "six", "--format", "{{.Networks.dual.GlobalIPv6Address}}", show=False).strip()
           == "fd00:33::2" and "default via fd00:33::1" in nsnet("exec", "six", "--", "ip", "-6", "route",
                                                                  show=False))
    server = http_server(["ip", "netns", "exec", "wan"], WAN6_PEER, 8083)
    print(f"$ nsnet exec six -- curl http://[{WAN6_PEER}]:8083/")
    proved("six reached the outside over IPv6", fetch("six", f"http://[{WAN6_PEER}]:8083/"))
    seen = client_seen_by(server)
    proved(f"the outside saw the host's IPv6 address {WAN6_HOST} (NAT66; it saw {seen})", seen == WAN6_HOST)
    server = http_server([NSNET, "exec", "six", "--"], "fd00:33::2", 8000)
    print(f"$ curl http://[{WAN6_HOST}]:8090/     (from the 'wan' machine)")
    proved("wan fetched a page from six through the host's IPv6 address",
           fetch_from(["ip", "netns", "exec", "wan"], f"http://[{WAN6_HOST}]:8090/"))
    proved(f"six saw the outside's own IPv6 address {WAN6_PEER}", client_seen_by(server) == WAN6_PEER)

    step("11. A one-shot sandbox")
    result = subprocess.run([NSNET, "run", "--rm", "--network", "app", "--", "sh", "-c",
                             "ip -brief address show eth0; exit 3"], capture_output=True, text=True)
    print("$ nsnet run --rm --network app -- sh -c 'ip -brief address show eth0; exit 3'")
    print(result.stdout.rstrip())
    proved("its exit code (3) came back and the sandbox is gone",
           result.returncode == 3 and "run-" not in nsnet("ps", show=False))

    step("12. Names: sandboxes find each other by name and alias (nsnet's resolver on the gateway)")
    print(sh("cat", "/etc/netns/client/resolv.conf").rstrip())
    proved("client resolves web through glibc",
           nsnet("exec", "client", "--", "getent", "hosts", "web").split()[:1] == ["10.31.0.2"])
    nsnet("create", "cache", "--network", "app", "--alias", "redis")
    cache = json.loads(nsnet("inspect", "cache", show=False))[0]["Networks"]["app"]["IPAddress"]
    proved(f"a new sandbox's alias resolves as soon as `create` returns ({cache})",
           nsnet("exec", "client", "--", "getent", "hosts", "redis").split()[:1] == [cache])
    proved("NAME.NETWORK resolves too", nsnet("exec", "client", "--", "getent", "hosts", "cache.app").split()[:1]
           == [cache])
    nsnet("rm", "cache")
    proved("and a removed one is gone at once",
           subprocess.run([NSNET, "exec", "client", "--", "getent", "hosts", "redis"]).returncode == 2)

    step("13. A service: one virtual address spread over sandboxes selected by label")
    for name in ("shop1", "shop2"):
        nsnet("create", name, "--network", "app", "--label", "app=shop")
    shops = [http_server([NSNET, "exec", name, "--"], "0.0.0.0", 8080) for name in ("shop1", "shop2")]
    vip = nsnet("service", "create", "shop", "--network", "app", "-p", "80:8080", "--selector", "app=shop",
                "--publish", "30080").strip()
    print(nsnet("service", "ls").rstrip())
    proved(f"client fetched http://shop/ (the VIP {vip}, by name) 20 times",
           all(fetch("client", "http://shop/") for _ in range(20)))
    proved(f"the outside fetched http://{WAN_HOST}:30080/ (the service published on the host)",
           fetch_from(["ip", "netns", "exec", "wan"], f"http://{WAN_HOST}:30080/"))
    logs = [client_log(server) for server in shops]
    proved(f"the kernel spread them over both backends ({len(logs[0])} and {len(logs[1])})",
           all(logs) and len(logs[0]) + len(logs[1]) == 21)
    proved(f"a backend saw the outside client's own address ({WAN_PEER})", WAN_PEER in logs[0] + logs[1])
    shops = [http_server([NSNET, "exec", name, "--"], "0.0.0.0", 8080) for name in ("shop1", "shop2")]
    nsnet("service", "create", "sticky", "--network", "app", "-p", "80:8080", "--selector", "app=shop",
          "--affinity", "client-ip=600")
    proved("client fetched http://sticky/ 10 times (client-IP affinity)",
           all(fetch("client", "http://sticky/") for _ in range(10)))
    logs = [client_log(server) for server in shops]
    proved(f"all 10 went to one backend ({len(logs[0])} and {len(logs[1])})", sorted(map(len, logs)) == [0, 10])
    nsnet("create", "shop3", "--network", "app", "--label", "app=shop")
    proved("a new sandbox with the label serves at once",
           "shop3" in nsnet("service", "inspect", "shop", "--format", "{{json .Backends}}", show=False))
    nsnet("service", "rm", "shop", "sticky")
    nsnet("rm", "shop1", "shop2", "shop3")

    step("14. Interception: a sidecar proxy gets the sandbox's outbound TCP (Istio's capture)")
    nsnet("intercept", "add", "client", "--outbound-port", "15001", "--exclude-uid", "1337")
    proxy = subprocess.Popen(["ip", "netns", "exec", "client", "setpriv", "--reuid=1337", "--regid=1337",
                              "--clear-groups", PYTHON, "-c", SIDECAR], stdout=subprocess.PIPE, text=True)
    started.append(proxy)
    proxy.stdout.readline()
    code = "import urllib.request; print(urllib.request.urlopen('http://10.31.0.2:8080/', timeout=3).read().decode())"
    print("$ nsnet exec client -- python3 -c \"urllib.request.urlopen('http://10.31.0.2:8080/')\"")
    answer = nsnet("exec", "client", "--", PYTHON, "-c", code, show=False).strip()
    print(f"  {answer}")
    proved("the proxy (uid 1337) received it and found the original destination (SO_ORIGINAL_DST)",
           answer == "proxied to 10.31.0.2:8080")
    nsnet("intercept", "rm", "client")
    proxy.kill()

    step("15. As a container runtime's CNI plugin: ADD with a published port, then DEL")
    bin_dir = tempfile.mkdtemp(prefix="nsnet-demo-cni-")
    made.append(bin_dir)
    plugin = nsnet("cni", "install", "--bin-dir", bin_dir).strip()
    sh("ip", "netns", "add", "ctr1")  # the runtime's part: the container's namespace is its own
    conf = {"cniVersion": "1.0.0", "name": "cnidemo", "type": "nsnet", "bridge": "cni-demo", "ipMasq": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]},
            "runtimeConfig": {"portMappings": [{"hostPort": 8095, "containerPort": 8000, "protocol": "tcp"}]}}
    env = dict(os.environ, CNI_CONTAINERID="ctr1", CNI_NETNS="/run/netns/ctr1", CNI_IFNAME="eth0")
    print("$ CNI_COMMAND=ADD CNI_CONTAINERID=ctr1 CNI_NETNS=/run/netns/ctr1 CNI_IFNAME=eth0 nsnet < conf.json")
    added = subprocess.run([plugin], input=json.dumps(conf), env={**env, "CNI_COMMAND": "ADD"},
                           capture_output=True, text=True)
    print(added.stdout.rstrip())
    proved("ADD answered with the container's interface and address",
           added.returncode == 0 and json.loads(added.stdout)["ips"][0]["address"] == "10.88.0.2/24")
    print(nsnet("ps").rstrip())
    server = http_server(["ip", "netns", "exec", "ctr1"], "10.88.0.2", 8000)
    print(f"$ curl http://{WAN_HOST}:8095/     (from the 'wan' machine)")
    proved("wan fetched a page from the container through its published port",
           fetch_from(["ip", "netns", "exec", "wan"], f"http://{WAN_HOST}:8095/"))
    server.kill()
    deleted = subprocess.run([plugin], input=json.dumps(conf), env={**env, "CNI_COMMAND": "DEL"},
                             capture_output=True, text=True)
    print("$ CNI_COMMAND=DEL ... nsnet < conf.json")
    proved("DEL detached it: nsnet lists no container", deleted.returncode == 0 and "cni-" not in nsnet("ps", show=False))
    sh("ip", "netns", "del", "ctr1")

    step("16. A link: two sandboxes joined by a cable of their own, no bridge (a lab's link)")
    nsnet("link", "web", "x", "--ip", "web=10.9.0.1/30", "--ip", "x=10.9.0.2/30")
    print(sh("ip", "-n", "x", "-brief", "addr", "show", "web").rstrip())
    server = http_server([NSNET, "exec", "web", "--"], "10.9.0.1", 8003)
    proved("x (on another network, isolated from web's) reached web over the cable",
           fetch("x", "http://10.9.0.1:8003/") and client_seen_by(server) == "10.9.0.2")
    nsnet("unlink", "web", "x")
    proved("unlink took the cable away", "web" not in sh("ip", "-n", "x", "-brief", "link", show=False))

    step("17. Other network modes: a sandbox in another's namespace (container:NAME)")
    nsnet("create", "side", "--network", "container:web")

    def netns(name: str) -> str:
        return nsnet("exec", name, "--", "readlink", "/proc/self/ns/net", show=False)
    proved("side runs in web's namespace (the same namespace, so web's addresses and ports)",
           netns("side") == netns("web") != netns("client"))
    proved("web cannot be removed while side shares it", subprocess.run([NSNET, "rm", "web"],
                                                                         capture_output=True).returncode != 0)
    nsnet("rm", "side")

    step("18. Teardown of all the above")
    nsnet("rm", "-f", "web", "client", "api", "x", "vault", "six")
    nsnet("network", "rm", "app", "other", "sealed", "dual", "cnidemo")

    step("19. A lab from a file: up, verify with real probes, shaping, a picture, down")
    lab = str(Path(__file__).with_name("lab.yaml"))
    print(nsnet("up", lab).rstrip())
    proved("up again changes nothing", "up to date" in nsnet("up", lab))
    verified = subprocess.run([NSNET, "verify", lab], capture_output=True, text=True)
    print("$ nsnet verify examples/lab.yaml\n" + verified.stdout.rstrip())
    proved("every expectation of the file holds (exit 0)", verified.returncode == 0)
    print(nsnet("shapes").rstrip())
    proved("the server's cable is capped at 10mbit by a tbf qdisc (over netlink)",
           "rate 10Mbit" in sh("tc", "-n", "server", "qdisc", "show", "dev", "router", show=False))
    print(nsnet("graph", "--format", "mermaid").rstrip())
    nsnet("down", lab)
    proved("down removed all the lab made", not {"client", "router", "server"} & set(os.listdir("/run/netns")))

    step("20. Several hosts: an overlay network across two hosts on etcd (a multi-host lab nested in this one)")
    script = str(Path(__file__).with_name("overlay.py"))
    hosts = subprocess.run([NSNET, "lab", "--hosts", "2", "--", sys.executable, script], capture_output=True, text=True)
    print(f"$ nsnet lab --hosts 2 -- python examples/overlay.py\n{hosts.stdout.rstrip()}")
    result = next((json.loads(line[7:]) for line in hosts.stdout.splitlines() if line.startswith("RESULT ")), {})
    proved("a sandbox on h2 finds one on h1 by name and reaches it through VXLAN, its own address kept; h2 routes"
           " h1's block to h1's VTEP", hosts.returncode == 0 and result.get("ok") is True)

    step("21. Nothing is left behind")
    time.sleep(0.2)  # the kernel removes a deleted namespace's veths in its cleanup work
    links = sh("ip", "-brief", "link").rstrip()
    print(links)
    ours = [l for l in links.splitlines() if l.startswith(("nsbr-", "nsv", "cni-"))]
    proved("no nsnet bridge or veth is left", ours == [])
    proved("no sandbox namespace is left", sorted(os.listdir("/run/netns")) == ["wan"])
    proved("nsnet's nftables table is gone", "nsnet" not in sh("nft", "list", "tables"))
    proved("nsnet's resolver exited with the last network",
           "nsnet.dns.server" not in sh("ps", "-eo", "args", show=False))
    print("\nDone: every step above was checked with real traffic in real namespaces.")


if __name__ == "__main__":
    try:
        main()
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
        for directory in made:
            shutil.rmtree(directory, ignore_errors=True)
