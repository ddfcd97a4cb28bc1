"""The big node's delegation service (SPEC §5): sessions that generate PoC batches for small nodes."""
