"""Every nftables name nsnet owns, and why each hook priority is what it is.

nsnet keeps everything in two tables, `inet nsnet` and `bridge nsnet`, and never touches another
table, chain or policy. Per-network and per-sandbox facts live in sets and maps, so the rules are
fixed and a packet's lookup costs the same whatever the number of networks, sandboxes or
published ports; a change is element inserts or deletes in one transaction.

An nftables set holds addresses of one family: each set of addresses exists once per family,
the IPv6 one named with a `6` after the IPv4 one's name (`in_family`).
"""


def in_family(name: str, version: int) -> str:
    return name if version == 4 else f"{name}6"



FAMILY = "inet"
TABLE = "nsnet"  # the default ledger's; another ledger's tables are named after it (model.Owner)
# Layer 2 filtering (icc, anti-spoofing) needs the bridge family: frames switched between two
# ports of a bridge never reach the inet hooks unless br_netfilter is loaded, which nsnet does
# not rely on.
BRIDGE_FAMILY = "bridge"

# inet sets and maps
BRIDGES = "bridges"  # every nsnet bridge
INTERNAL_BRIDGES = "internal_bridges"  # bridges of --internal networks
# Services (nsnet.services), each set in both families: one lookup of VIP . protocol . port gives the service's verdict,
# a goto to the dispatch chain for its number of backends (which picks one at random and DNATs to
# it through the two maps below), or to SERVICE_REJECT when it has none. The pick's number is part
# of the backends map's key, a type only a `typeof` declaration can give (declared in text, `Nft`).
SERVICE_IPS = "service_ips"  # vip . proto . port : verdict
SERVICE_BACKENDS = "service_backends"  # vip . proto . port . pick : backend address
SERVICE_BACKENDS_TYPEOF = {4: "ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr",
                           6: "ip6 daddr . meta l4proto . th dport . numgen random mod 1 : ip6 daddr"}
SERVICE_PORTS = "service_ports"  # vip . proto . port : the backends' port
SERVICE_VIPS = "service_vips"  # every VIP: its other ports are refused, and it is no other network's
SERVICE_RANGE = "service_range"  # interval: the range's addresses no service holds are dropped
SERVICE_REJECT = "service_reject"  # a regular chain: TCP reset, else ICMP port unreachable


# Client-IP affinity: a service with affinity has its VIPs in SERVICE_REMEMBERED, whose verdict
# sends a connection to the chain that records client and VIP -> backend in SERVICE_AFFINITY for
# the service's timeout (one chain per timeout in use); the next connection of that client to that
# VIP finds its backend there before any pick. A dynamic map updated from the packet path:
# libnftables 1.0.6's JSON can neither declare one (no `dynamic` flag) nor write or list the update
# statement, so both are text (`Nft`).
# IPv4 records a new connection's first packet once DNATed (SERVICE_PICKS, dstnat + 1): the client
# is its source, the VIP conntrack's original destination, the backend its destination. IPv6
# cannot: nft 1.0.6 lays out a map update whose key passes 16 bytes and whose value is an IPv6
# address over overlapping registers (it writes part of the value into the key, or aborts), so the
# key is 16 bytes, the low 64 bits of the client and of the VIP, and both must be in the packet:
# the connection's first reply once un-DNATed (SERVICE_REPLIES, srcnat + 1: from the VIP to the
# client), the backend conntrack's reply source. Two clients with the same low 64 bits share a
# backend of the same service, never another's: every VIP of the range (which lies within one /64,
# nsnet.services.service_ranges) has its own low 64 bits.
SERVICE_AFFINITY = "service_affinity"  # client . VIP : backend, each element with its timeout
SERVICE_AFFINITY_TYPEOF = {4: "ip saddr . ip daddr : ip daddr", 6: "@nh,128,64 . @nh,256,64 : ip6 daddr"}
SERVICE_AFFINITY_SIZE = 1 << 20  # clients remembered per family (nft's default is 65,535)
SERVICE_REMEMBERED = "service_remembered"  # VIP : goto its timeout's remember chain
REMEMBER_PREFIX = "service_remember_"
SERVICE_PICKS = "service_picks"
SERVICE_PICKS_OUTPUT = "service_picks_output"
PICKS_PRIORITY = -99
SERVICE_REPLIES = "service_replies"
SERVICE_REPLIES_INPUT = "service_replies_input"
REPLIES_PRIORITY = 101


def remember_chain(seconds: int) -> str:
    return f"{REMEMBER_PREFIX}{seconds}"


# A service port published on the host (--publish, the NodePort shape): the same, keyed by
# protocol and host port, looked up among published ports (a local destination).
SERVICE_NODE_PORTS = "service_node_ports"  # proto . host port : verdict
SERVICE_NODE_BACKENDS = "service_node_backends"  # proto . host port . pick : backend address
SERVICE_NODE_BACKENDS_TYPEOF = {4: "meta l4proto . th dport . numgen random mod 1 : ip daddr",
                                6: "meta l4proto . th dport . numgen random mod 1 : ip6 daddr"}
SERVICE_NODE_TARGETS = "service_node_targets"  # proto . host port : the backends' port

DISPATCH_PREFIX = "service_dispatch_"


def dispatch_chain(backends: int) -> str:
    """The chain that picks one of `backends` backends, shared by every service with that many."""
    return f"{DISPATCH_PREFIX}{backends}"


def node_dispatch_chain(backends: int) -> str:
    """Its twin for connections to a service port published on the host."""
    return f"service_node_dispatch_{backends}"


# bridge . gateway . port where the resolver answers an --internal network (its only way to the host)
DNS_LISTENERS = "dns_listeners"
# bridge . gateway: the port the resolver listens on when another program holds 53 there
DNS_PORTS = "dns_ports"
# Verdict maps, so a forwarded packet costs one lookup per question whatever the number of networks:
WITHIN_NETWORK = "within_network"  # ifname . ifname (br, br): accept, or drop on a --no-icc network
TO_BRIDGE = "to_bridge"  # oifname: jump to the to_network chain, or drop for an internal network
FROM_BRIDGE = "from_bridge"  # iifname: accept (egress), or drop for an internal network
OVERLAY_PORTS = "overlay_ports"  # UDP ports of overlay networks' VXLAN (nsnet.cluster)
OVERLAY_VTEPS = "overlay_vteps"  # address . port of every overlay peer host: the VTEPs VXLAN is taken from
MASQ_SUBNETS = "masq_subnets"  # ipv4 subnets (interval) of non-internal networks
BRIDGE_SUBNETS = "bridge_subnets"  # ifname . ipv4 subnet (interval): each bridge with its subnet
SANDBOX_ADDRESSES = "sandbox_addresses"  # ifname . ipv4_addr: each sandbox's address, by its bridge
# Published ports, on every host address (key proto . host port) or on one (host ip . proto .
# host port), each as two maps: to the sandbox's address and to its port. One map to
# `ipv4_addr . inet_service` would do, but libnftables 1.0.6 (Debian 12) segfaults parsing a JSON
# dnat statement whose map data is a concatenation; the text syntax works, JSON does not.
PUBLISHED_ANY_IP = "published_any_ip"
PUBLISHED_ANY_PORT = "published_any_port"
PUBLISHED_ADDR_IP = "published_addr_ip"
PUBLISHED_ADDR_PORT = "published_addr_port"
PUBLISHED_TARGETS = "published_targets"  # sandbox ip . proto . port: reachable by direct routing
# (Each exists per family: 0.0.0.0:8080 and [::]:8080 may go to two sandboxes.)

# bridge sets
PORT_IDENTITY = "port_identity"  # ifname . ether_addr . ipv4_addr: the one MAC and IPv4 source
# ifname . ether_addr . ether_addr . ipv4_addr: the Ethernet source, and the ARP sender's MAC and
# address, all the port's own
PORT_ARP_IDENTITY = "port_arp_identity"
# (PORT_IDENTITY6: ifname . ether_addr . ipv6_addr, the port's address and its link-local one.)
# ifname . the target of a neighbour advertisement (the address it claims): the port's own
# addresses, global and link-local. libnftables 1.0.6 reads the target only as raw payload
# (`@th,64,128`, no `icmpv6 taddr`), whose type (a 128-bit integer) only a `typeof` set can
# hold, and its JSON cannot declare one: so this set is declared in text (`Nft`), and its
# elements are integers as the listing prints them (`render.nd_target`).
ND_CLAIMS = "nd_claims"
ND_CLAIMS_TYPEOF = "iifname . @th,64,128"

# Chains, with numeric priorities: libnftables 1.0.6's JSON parser takes no priority names and
# silently makes a regular, unhooked chain when given one.
#
# `filter` (0) is where distribution firewalls and iptables-nft's filter tables run; nsnet's accept
# there does not override their drops (nftables evaluates every base chain), which is why
# `nsnet doctor` reports foreign drop policies.
FORWARD = "forward"
FORWARD_PRIORITY = 0  # filter
TO_NETWORK = "to_network"  # a regular chain: what may enter a network from elsewhere
# Input (the host's own services): an internal network reaches nothing outside itself, the host
# included; replies to connections the host made are let through.
INPUT = "input"
INTERNAL_INPUT = "internal_input"  # a regular chain, jumped to from an internal bridge
# Published ports are translated at `dstnat` (-100), before routing decides where a packet goes,
# for packets arriving (prerouting) and for the host's own (output).
PREROUTING_NAT = "prerouting"
OUTPUT_NAT = "output"
PUBLISHED_PORTS = "published_ports"  # regular chains (one per family), jumped to for a local destination
DSTNAT_PRIORITY = -100
# Before anything else sees it (`raw`, -300), a packet from a sandbox to 127.0.0.0/8 is dropped:
# route_localnet, which lets the host reach its published ports through 127.0.0.1, would
# otherwise let sandboxes reach the host's loopback-only services (CVE-2020-8558). At the same
# priority, traffic between two sandboxes of one network is exempted from conntrack: with
# br_netfilter (built into many kernels, on by default in every namespace) it would otherwise be
# tracked, which costs ~7 % of throughput and ~30 % of the new-connection rate, for nothing:
# nsnet filters it at layer 2 and NATs none of it.
PREROUTING_FILTER = "prerouting_guard"
RAW_PRIORITY = -300
# Masquerade runs at `srcnat` (100), after routing has chosen the output interface.
POSTROUTING = "postrouting"
POSTROUTING_PRIORITY = 100  # srcnat

# Bridge family. Prerouting (-200, before the bridge's own filter) sees every frame entering from
# a port: anti-spoofing. Rules match the port (iifname), not the bridge: `meta ibrname` needs
# CONFIG_NFT_BRIDGE_META, which kernels such as this project's CI machine lack. There is no forward
# chain: --no-icc is the bridge's own port isolation, so a switched frame pays no hook at all.
BRIDGE_PREROUTING = "prerouting"
BRIDGE_PREROUTING_PRIORITY = -200
