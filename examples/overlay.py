"""Two hosts, one network: run inside `nsnet lab --hosts 2` (the demo's step 20 does). Prints what a
user would type on each host and what the network answers."""

import json
import subprocess
import sys
from ipaddress import ip_address, ip_network

from nsnet.labhosts import Hosts

NSNET = [sys.executable, "-m", "nsnet"]
SERVER = ("import socket; s = socket.socket(); s.bind(('0.0.0.0', 8080)); s.listen(1); print('up', flush=True);"
          " c, peer = s.accept(); c.sendall(('hello ' + peer[0]).encode()); c.close()")
CLIENT = "import socket, sys; print(socket.create_connection((sys.argv[1], 8080), timeout=5).recv(100).decode())"


def on(hosts: Hosts, host: str, *args: str) -> str:
    print(f"[{host}]$ nsnet {' '.join(args)}")
    done = hosts.run(host, [*NSNET, *args], check=False)
    if done.returncode != 0:
        raise SystemExit(f"{host}: {done.stderr.strip()}")
    return done.stdout


def main() -> int:
    hosts = Hosts.current()
    on(hosts, "h1", "network", "create", "mesh", "--driver", "overlay", "--subnet", "10.80.0.0/16")
    on(hosts, "h1", "create", "a", "--network", "mesh")
    on(hosts, "h2", "create", "b", "--network", "mesh")
    a = json.loads(on(hosts, "h1", "inspect", "a"))[0]["Networks"]["mesh"]["IPAddress"]
    b = json.loads(on(hosts, "h2", "inspect", "b"))[0]["Networks"]["mesh"]["IPAddress"]
    print(on(hosts, "h1", "cluster", "hosts").rstrip())
    overlay = json.loads(on(hosts, "h2", "network", "inspect", "mesh", "--format", "{{json .Overlay}}"))
    print(f"h2's VXLAN device {overlay['Device']} (VNI {overlay['VNI']}), block {overlay['Block']}, peers:"
          f" {', '.join(p['Host'] + ' ' + p['Block'] + ' via ' + p['Vtep'] for p in overlay['Peers'])}")
    resolved = on(hosts, "h2", "exec", "b", "--", "getent", "hosts", "a").split()
    print(" ".join(resolved))
    server = hosts.popen("h1", [*NSNET, "exec", "a", "--", sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    server.stdout.readline()
    answer = on(hosts, "h2", "exec", "b", "--", sys.executable, "-c", CLIENT, "a").strip()
    print(answer)
    server.wait(5)
    peers_ok = [(p["Host"], ip_address(a) in ip_network(p["Block"])) for p in overlay["Peers"]] == [("h1", True)]
    ok = resolved[:1] == [a] and answer == f"hello {b}" and peers_ok
    print(f"RESULT {json.dumps({'a': a, 'b': b, 'ok': ok})}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
