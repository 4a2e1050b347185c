"""Every nftables name nsnet owns, and why each hook priority is what it is.

nsnet keeps everything in one table, `inet nsnet`, and never touches another table, chain or
policy. Per-network facts live in sets, so the rules are fixed and a packet's lookup costs the
same whatever the number of networks; adding a network is element inserts.
"""

FAMILY = "inet"
TABLE = "nsnet"
# Layer 2 filtering (icc) needs the bridge family: frames switched between two ports of a bridge
# never reach the inet hooks unless br_netfilter is loaded, which nsnet does not rely on.
BRIDGE_FAMILY = "bridge"

# Sets (type ifname unless said otherwise)
BRIDGES = "bridges"  # every nsnet bridge
INTERNAL_BRIDGES = "internal_bridges"  # bridges of --internal networks
SAME_BRIDGE = "same_bridge"  # ifname . ifname pairs (br, br): traffic that stays in one network
MASQ_SUBNETS = "masq_subnets"  # ipv4 subnets (interval) of non-internal networks
NO_ICC_PORTS = "no_icc_ports"  # in the bridge table: host veths of sandboxes on --no-icc networks

# Chains, with numeric priorities: libnftables 1.0.6's JSON parser takes no priority names and
# silently makes a regular, unhooked chain when given one. `filter` (0) is where the distribution firewall and iptables-nft's filter tables run;
# nsnet's accept there does not override their drops (nftables evaluates every base chain), which
# is why `doctor` reports foreign drop policies. Masquerade runs at `srcnat` (100), after routing
# has chosen the output interface.
FORWARD = "forward"
FORWARD_PRIORITY = 0  # filter
POSTROUTING = "postrouting"
POSTROUTING_PRIORITY = 100  # srcnat
# Bridge family: the forward hook sees only frames switched port to port; frames for the host
# (the gateway) take the input hook, so a --no-icc sandbox still reaches its gateway and egress.
# Rules match the port (iifname), not the bridge: `meta ibrname` needs CONFIG_NFT_BRIDGE_META,
# which kernels such as this project's CI machine lack.
BRIDGE_FORWARD = "forward"
BRIDGE_FORWARD_PRIORITY = 0  # filter
