"""A full bridge: every sandbox of a network with as many ports as this host can flood a
broadcast to still reaches its gateway, and one more is refused rather than made unreachable."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

from nsnet import Engine


def reaches(sandbox: str, ip: str, port: int) -> bool:
    done = subprocess.run(["ip", "netns", "exec", sandbox, sys.executable, "-c",
                           f"import socket; socket.create_connection(({ip!r}, {port}), timeout=2)"], capture_output=True)
    return done.returncode == 0


def test_a_network_holds_what_a_broadcast_reaches_and_refuses_more(engine: Engine) -> None:
    limit = engine.kernel.flood_limit()  # the kernel's default (1,000): the lab cannot see the host's setting
    assert limit == 1000
    engine.create_network("big", subnet="10.40.0.0/16", dns=False)
    for i in range(limit):
        engine.create_sandbox(f"sb{i:04d}", networks=["big"])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("10.40.0.1", 7000))
    listener.listen(16)
    accepted = threading.Thread(target=lambda: [listener.accept()[0].close() for _ in range(2)], daemon=True)
    accepted.start()
    try:
        # The flood goes to the newest port first: the oldest sandbox is the one a lost copy hits.
        assert reaches("sb0000", "10.40.0.1", 7000) and reaches(f"sb{limit - 1:04d}", "10.40.0.1", 7000)
    finally:
        listener.close()
    refused = subprocess.run([sys.executable, "-m", "nsnet", "create", "extra", "--network", "big"],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "is full" in refused.stderr
