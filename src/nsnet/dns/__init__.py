"""Names: the resolver that answers every DNS network's sandboxes by name and alias and forwards
the rest upstream (see nsnet.dns.server), and what the engine does to keep it serving the ledger."""
