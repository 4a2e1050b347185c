"""nsnet as a CNI plugin (containernetworking/cni SPEC 1.1.0): a runtime runs the executable named
`nsnet` with CNI_COMMAND and a network configuration, and nsnet serves it from its ledger, in
place of the reference `bridge` + `host-local` + `portmap` + `firewall` chain.

spec: the wire format (versions, errors, results); config: a configuration in the reference
plugins' keys, read into what the engine takes; plugin: the commands; install: the executable.
"""
