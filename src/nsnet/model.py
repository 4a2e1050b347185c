"""The plain data nsnet works with: what a user asks for and what exists.

Every object here is a frozen record (nsnet.record) with no behaviour beyond describing itself; the engine
returns them, the planner reads them, the store persists them.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network, ip_interface

from .record import record

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from typing import Any

DEFAULT_NETWORK = "nsnet"
DEFAULT_MTU = 1500

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
IPInterface = IPv4Interface | IPv6Interface
FAMILIES = (4, 6)


@record
class SubnetRequest:
    """One family of a `network create`: what is not given is left to IPAM."""

    version: int
    subnet: IPNetwork | None = None
    gateway: IPAddress | None = None
    ip_range: IPNetwork | None = None


@record
class NetworkRequest:
    """A validated `network create`: one SubnetRequest per family it has (IPv4, IPv6 or both)."""

    name: str
    subnets: tuple[SubnetRequest, ...] = (SubnetRequest(4),)
    internal: bool = False
    mtu: int = DEFAULT_MTU
    icc: bool = True
    labels: tuple[tuple[str, str], ...] = ()
    ipv6_routed: bool = False
    ipv4_routed: bool = False
    bridge: str | None = None  # nsnet names it (nsbr-<id>) unless asked to (CNI's `bridge`)
    dns: bool = True
    dns_servers: tuple[str, ...] = ()
    driver: str = "bridge"  # or macvlan (nsnet.drivers)
    parent: str | None = None  # macvlan: the host interface its children hang off
    driver_mode: str | None = None  # macvlan: bridge, private, vepa or passthru


@record
class Subnet:
    """A network's addressing in one family: the subnet, the gateway the bridge holds, and the
    range sandboxes' addresses are taken from."""

    subnet: IPNetwork
    gateway: IPAddress | None  # None: a macvlan network given no --gateway (no default route)
    ip_range: IPNetwork | None = None

    @property
    def version(self) -> int:
        return self.subnet.version

    @property
    def gateway_interface(self) -> IPInterface:
        return ip_interface(f"{self.gateway}/{self.subnet.prefixlen}")

    def to_dict(self) -> dict[str, Any]:
        return {"Subnet": str(self.subnet), "Gateway": str(self.gateway) if self.gateway else None,
                "IPRange": str(self.ip_range) if self.ip_range else None}


@record
class Network:
    """A bridge and its subnets: at most one per family, IPv4 first."""

    id: str
    name: str
    bridge: str
    subnets: tuple[Subnet, ...]
    internal: bool = False
    mtu: int = DEFAULT_MTU
    icc: bool = True
    labels: tuple[tuple[str, str], ...] = ()
    created: float = 0.0
    state: str = "ready"
    # Egress routed without NAT (Docker's routed gateway mode, per family); inbound stays limited
    # to published ports.
    ipv6_routed: bool = False
    ipv4_routed: bool = False
    # nsnet's resolver answers its sandboxes' names on its gateways (nsnet.dns), forwarding the
    # rest to dns_servers, or the host's resolvers when there are none.
    dns: bool = False
    dns_servers: tuple[str, ...] = ()
    # The port the resolver listens on at the gateways: 53, or another when a program of the
    # host holds 53 there, the firewall then redirecting the sandboxes' questions to GW:53 to it.
    dns_port: int = 53
    # How sandboxes attach (nsnet.drivers): a bridge of nsnet's (`bridge`: the fields above), or
    # macvlan children of the host's interface `parent` in `driver_mode` (no bridge: `bridge` is
    # empty; no firewall of nsnet's, no DNS, no published ports).
    driver: str = "bridge"
    parent: str | None = None
    driver_mode: str | None = None

    def routed(self, version: int) -> bool:
        return self.ipv4_routed if version == 4 else self.ipv6_routed

    def family(self, version: int) -> Subnet | None:
        return next((s for s in self.subnets if s.version == version), None)

    @property
    def ipv4(self) -> Subnet | None:
        return self.family(4)

    @property
    def ipv6(self) -> Subnet | None:
        return self.family(6)

    # The primary (first) subnet's, for messages and for single-stack callers.
    @property
    def subnet(self) -> IPNetwork:
        return self.subnets[0].subnet

    @property
    def gateway(self) -> IPAddress:
        return self.subnets[0].gateway

    @property
    def ip_range(self) -> IPNetwork | None:
        return self.subnets[0].ip_range

    def to_dict(self) -> dict[str, Any]:
        v4, v6 = self.ipv4, self.ipv6
        return {
            "Id": self.id,
            "Name": self.name,
            "Driver": self.driver,
            "Bridge": self.bridge,
            **({"Parent": self.parent, "MacvlanMode": self.driver_mode} if self.driver == "macvlan" else {}),
            # Subnet/Gateway/IPRange: the IPv4 ones, as before IPv6; IPAM.Config lists every family.
            "Subnet": str(v4.subnet) if v4 else None,
            "Gateway": str(v4.gateway) if v4 and v4.gateway else None,
            "IPRange": str(v4.ip_range) if v4 and v4.ip_range else None,
            "EnableIPv4": v4 is not None,
            "EnableIPv6": v6 is not None,
            "IPv4Routed": self.ipv4_routed,
            "IPv6Routed": self.ipv6_routed,
            "IPAM": {"Config": [s.to_dict() for s in self.subnets]},
            "Internal": self.internal,
            "ICC": self.icc,
            "MTU": self.mtu,
            "DNS": self.dns,
            "DNSServers": list(self.dns_servers),
            "DNSPort": self.dns_port,
            "Labels": dict(self.labels),
            "Created": self.created,
            "State": self.state,
        }


@record
class PortMapping:
    """One published port: host address (None: all of them) and port, to the sandbox's port."""

    host_ip: IPAddress | None
    host_port: int
    sandbox_port: int
    protocol: str = "tcp"

    @property
    def host(self) -> str:
        """The host address as `port` prints it: 0.0.0.0 for every address, [v6] bracketed."""
        if self.host_ip is None:
            return "0.0.0.0"
        return f"[{self.host_ip}]" if self.host_ip.version == 6 else str(self.host_ip)

    def __str__(self) -> str:
        return f"{self.sandbox_port}/{self.protocol} -> {self.host}:{self.host_port}"

    def bindings(self, versions: tuple[int, ...]) -> list[PortMapping]:
        """Where the mapping is published, for an endpoint with these families: no address means
        0.0.0.0 and [::] (each only in a family the endpoint has)."""
        if self.host_ip is not None:
            return [self]
        unspecified = {4: IPv4Address(0), 6: IPv6Address(0)}
        return [PortMapping(unspecified[v], self.host_port, self.sandbox_port, self.protocol) for v in versions]

    def to_dict(self) -> dict[str, Any]:
        return {
            "HostIp": str(self.host_ip) if self.host_ip else "0.0.0.0",
            "HostPort": self.host_port,
            "SandboxPort": self.sandbox_port,
            "Protocol": self.protocol,
        }


@record
class Endpoint:
    """One sandbox attached to one network: a veth pair, its MAC, and an address (with the
    network's gateway) in each family of the network, IPv4 first. The endpoint that carries the
    sandbox's default route carries it in each of its families."""

    id: str
    sandbox: str
    network: str
    ifname: str
    host_ifname: str
    mac: str
    addresses: tuple[IPInterface, ...]
    gateways: tuple[IPAddress, ...]
    default_route: bool = False
    state: str = "ready"
    ports: tuple[PortMapping, ...] = ()
    netns: str | None = None  # the runtime's namespace path of a container's endpoint (Sandbox.container_id)
    aliases: tuple[str, ...] = ()  # more names of the sandbox on this network (nsnet.dns)

    @property
    def where(self) -> str:
        """The namespace of the sandbox end, as the kernel layer takes it: the sandbox's name for a
        namespace nsnet pinned, the path of one a container runtime owns."""
        return self.netns or self.sandbox

    def family(self, version: int) -> IPInterface | None:
        return next((a for a in self.addresses if a.version == version), None)

    @property
    def address(self) -> IPInterface:
        """The primary (first) address."""
        return self.addresses[0]

    @property
    def gateway(self) -> IPAddress:
        return self.gateways[0]

    def bindings(self) -> list[PortMapping]:
        """Every host address and port the endpoint is published on (PortMapping.bindings)."""
        versions = tuple(a.version for a in self.addresses)
        return [b for p in self.ports for b in p.bindings(versions)]

    @property
    def ports_note(self) -> str | None:
        """What `port` and `inspect` say of an endpoint whose network lacks IPv6."""
        if self.ports and self.family(6) is None:
            return f"network {self.network} has no IPv6: its ports are not published on the host's IPv6 addresses"
        return None

    def to_dict(self) -> dict[str, Any]:
        v4, v6 = self.family(4), self.family(6)
        gateways = {g.version: g for g in self.gateways}
        note = {"PortsNote": self.ports_note} if self.ports_note else {}
        return {
            "EndpointId": self.id,
            "Network": self.network,
            "Interface": self.ifname,
            "HostInterface": self.host_ifname,
            "MacAddress": self.mac,
            "IPAddress": str(v4.ip) if v4 else "",
            "IPPrefixLen": v4.network.prefixlen if v4 else 0,
            "Gateway": str(gateways[4]) if 4 in gateways else "",
            "GlobalIPv6Address": str(v6.ip) if v6 else "",
            "GlobalIPv6PrefixLen": v6.network.prefixlen if v6 else 0,
            "IPv6Gateway": str(gateways[6]) if 6 in gateways else "",
            "DefaultRoute": self.default_route,
            "Aliases": list(self.aliases),
            "Ports": [p.to_dict() for p in self.bindings()],
            **note,
        }


@record
class Tap:
    """A VM guest's endpoint (nsnet.taps): a persistent tap device nsnet made on the network's
    bridge instead of a veth into a namespace, owned by `uid`/`gid` (None: root only) so an
    unprivileged QEMU can open it. The endpoint's MAC is the guest's; the tap's own is that MAC
    with 0xfe as its first byte (libvirt's rule: the bridge never takes the tap for the guest)."""

    uid: int | None = None
    gid: int | None = None


@record
class Sandbox:
    """A network namespace with endpoints: one nsnet made and pinned (netns /run/netns/NAME), or a
    container's that a runtime made and owns (`container_id` set, netns its path; CNI), which
    nsnet attaches to and detaches from but never creates, enters for processes or deletes."""

    id: str
    name: str
    netns: str
    endpoints: tuple[Endpoint, ...] = ()
    created: float = 0.0
    state: str = "ready"
    container_id: str | None = None
    labels: tuple[tuple[str, str], ...] = ()  # what services select it by (--label KEY=VALUE)
    # Docker's network modes beyond its own namespace (nsnet.modes): "host" (the namespace nsnet
    # runs in, none of its own) or "container:DONOR" (another sandbox's namespace, joined).
    network_mode: str | None = None
    tap: Tap | None = None  # a VM guest's tap endpoint: no namespace (nsnet.taps)

    @property
    def donor(self) -> str | None:
        """The sandbox whose namespace a `container:` sandbox joined."""
        mode = self.network_mode or ""
        return mode.removeprefix("container:") if mode.startswith("container:") else None

    @property
    def handle(self) -> str:
        """Its namespace as the kernel layer takes it (Endpoint.where): a joiner's is its donor's."""
        return self.netns if self.container_id else (self.donor or self.name)

    def endpoint(self, network: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.network == network), None)

    def to_dict(self) -> dict[str, Any]:
        container = {"ContainerID": self.container_id} if self.container_id else {}
        if self.tap is not None:
            from .taps import describe

            container["Tap"] = describe(self)
        return {
            "Id": self.id,
            "Name": self.name,
            **container,
            "NetNS": self.netns,
            "NetworkMode": self.network_mode or ("none" if not self.endpoints else "default"),
            "Created": self.created,
            "State": self.state,
            "Labels": dict(self.labels),
            "Networks": {e.network: e.to_dict() for e in self.endpoints},
        }


@record
class Owner:
    """What marks a ledger's kernel objects as its own, so two ledgers on one host (two state
    directories) never take each other's: its nftables tables' name, and the interface group
    (IFLA_GROUP) of every bridge and host-side veth it makes."""

    table: str = "nsnet"
    group: int = 0x4E000001


@record
class Route:
    """A static route inside a sandbox (nsnet.routes)."""

    sandbox: str
    dst: IPNetwork
    via: IPAddress
    created: float = 0.0
    state: str = "ready"

    def __str__(self) -> str:
        return f"{self.dst} via {self.via}"

    def to_dict(self) -> dict[str, Any]:
        return {"Sandbox": self.sandbox, "Destination": str(self.dst), "Gateway": str(self.via),
                "Created": self.created, "State": self.state}


@record
class LinkEnd:
    """One side of a link: its sandbox, the interface there, and its addresses."""

    sandbox: str
    ifname: str
    addresses: tuple[IPInterface, ...] = ()


@record
class Link:
    """A veth pair joining two sandboxes directly, no bridge between them (the article's first
    figure; a lab's cable): `nsnet link A B`."""

    id: str
    a: LinkEnd
    b: LinkEnd
    mtu: int = DEFAULT_MTU
    created: float = 0.0
    state: str = "ready"

    @property
    def ends(self) -> tuple[LinkEnd, LinkEnd]:
        return self.a, self.b

    def to_dict(self) -> dict[str, Any]:
        return {"Id": self.id, "MTU": self.mtu, "Created": self.created, "State": self.state,
                "Ends": [{"Sandbox": e.sandbox, "Interface": e.ifname, "IPAddresses": [str(a) for a in e.addresses]}
                         for e in self.ends]}


@record
class ServicePort:
    """A port of a service's VIPs, the backends' port it goes to, and the host port that also
    reaches it on every address of the host (`--publish`, Kubernetes' NodePort), if any."""

    protocol: str
    port: int
    target: int
    node_port: int | None = None

    def __str__(self) -> str:
        published = f" (host port {self.node_port})" if self.node_port else ""
        return f"{self.port}/{self.protocol} -> {self.target}{published}"


@record
class Service:
    """Virtual addresses on a network (one per family of the network), spread by the kernel over
    backends: sandboxes named, and sandboxes of the network whose labels hold the selector
    (Kubernetes' Service, nsnet.services); with client-IP affinity, a client stays with its
    backend for `affinity` seconds after its last new connection."""

    id: str
    name: str
    network: str
    vips: tuple[IPAddress, ...]  # IPv4 first
    ports: tuple[ServicePort, ...]
    backends: tuple[str, ...] = ()  # named with --backend
    selector: tuple[tuple[str, str], ...] = ()
    affinity: int | None = None
    created: float = 0.0
    state: str = "ready"

    def selects(self, name: str, labels: tuple[tuple[str, str], ...]) -> bool:
        return name in self.backends or (bool(self.selector) and set(self.selector) <= set(labels))

    def to_dict(self, serving: list[tuple[str, tuple[str, ...]]] | None = None) -> dict[str, Any]:
        # VIP and IPAddress (the first of each) as the IPv4-only release printed them, for scripts.
        found = ({"Backends": [{"Sandbox": n, "IPAddress": ips[0] if ips else "", "IPAddresses": list(ips)}
                               for n, ips in serving]} if serving is not None else {})
        return {"Id": self.id, "Name": self.name, "Network": self.network, "VIP": str(self.vips[0]),
                "VIPs": [str(v) for v in self.vips],
                "Ports": [{"Protocol": p.protocol, "Port": p.port, "TargetPort": p.target, "HostPort": p.node_port}
                          for p in self.ports],
                "NamedBackends": list(self.backends), "Selector": dict(self.selector),
                "Affinity": {"ClientIP": self.affinity} if self.affinity else None, **found,
                "Created": self.created, "State": self.state}


@record
class Overlay:
    """This host's share of an overlay network (nsnet.cluster): the VXLAN device that reaches the
    other hosts' blocks, and how."""

    network: str
    supernet: IPNetwork  # the whole network's subnet; this host's block is the network row's subnet
    vni: int
    port: int
    vtep_ip: IPAddress  # this host's underlay address
    underlay: str  # the underlay interface
    vtep_mac: str
    device: str  # the VXLAN device
    host: str  # this host's id in the cluster


@record
class Peer:
    """Another host's block of an overlay network and its VTEP."""

    host: str
    block: IPNetwork
    vtep_ip: IPAddress
    vtep_mac: str
