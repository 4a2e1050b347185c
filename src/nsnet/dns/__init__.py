"""Names: the resolver that answers every DNS network's sandboxes by name and alias and forwards
the rest upstream (see nsnet.dns.server), and what the engine does to keep it serving the ledger."""

# In the state directory: the resolver's lock (held for its life), control socket and log.
LOCK, SOCKET, LOG = "dns.lock", "dns.sock", "dns.log"
