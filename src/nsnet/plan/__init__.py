"""Planning: pure functions from desired state to an ordered list of kernel operations.

`ops` holds the operations (small frozen records named verb-noun, each knowing its undo);
`network` and `sandbox` hold the `plan_*` functions. Nothing here performs I/O; `nsnet.apply`
runs a plan against a Kernel.
"""
